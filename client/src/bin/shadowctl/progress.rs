//! A progress bar for long transfers, shown only when standard error is a
//! terminal (so scripts and pipes see clean output).

use std::io::IsTerminal;
use std::sync::Arc;

use indicatif::ProgressBar;
use indicatif::ProgressStyle;
use shadowstore_client::Progress;

pub struct Bar(Option<ProgressBar>);

/// A bar for `len` bytes (0: length unknown until the transfer says).
pub fn bar(len: u64, what: &str) -> Bar {
    if !std::io::stderr().is_terminal() {
        return Bar(None);
    }
    let b = ProgressBar::new(len);
    let style = ProgressStyle::with_template(&format!(
        "{what} {{bar:40}} {{bytes}}/{{total_bytes}} {{bytes_per_sec}} eta {{eta}}"
    ))
    .unwrap_or_else(|_| ProgressStyle::default_bar());
    b.set_style(style);
    Bar(Some(b))
}

impl Bar {
    /// The callback to hand the client library, if a bar is shown.
    pub fn hook(&self) -> Option<Progress> {
        let b = self.0.clone()?;
        Some(Arc::new(move |n| {
            if n > b.length().unwrap_or(0) {
                b.set_length(n);
            }
            b.set_position(n);
        }))
    }

    pub fn finish(self) {
        if let Some(b) = self.0 {
            b.finish_and_clear();
        }
    }
}

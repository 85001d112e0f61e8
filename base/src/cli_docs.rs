//! Shell completion scripts and manual pages of the binaries, generated
//! from their clap definitions (`shadowctl completions bash`, `shadowstore
//! man DIR`). Behind the `cli-docs` feature, which only the binaries'
//! crates enable.

use std::io;
use std::io::Write as _;
use std::path::Path;
use std::path::PathBuf;

/// The shells completion scripts are made for.
pub use clap_complete::Shell;

/// The completion script of `cmd` for `shell`.
pub fn completions(mut cmd: clap::Command, shell: Shell) -> Vec<u8> {
    let name = cmd.get_name().to_string();
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut cmd, name, &mut script);
    script
}

/// Writes `cmd`'s manual page (`NAME.1`) and one per subcommand
/// (`NAME-SUB.1`, recursively) into `dir`; returns the files written.
pub fn write_man_pages(cmd: clap::Command, dir: &Path) -> io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let mut written = Vec::new();
    let mut pending = vec![cmd];
    while let Some(cmd) = pending.pop() {
        let path = dir.join(format!("{}.1", cmd.get_name()));
        let mut page = Vec::new();
        clap_mangen::Man::new(cmd.clone()).render(&mut page)?;
        std::fs::write(&path, page)?;
        written.push(path);
        let parent = cmd.get_name().to_string();
        for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
            let name = format!("{parent}-{}", sub.get_name());
            pending.push(sub.clone().name(name));
        }
    }
    Ok(written)
}

/// Writes `bytes` to standard output; a reader that went away (`| head`)
/// is not an error.
pub fn write_stdout(bytes: &[u8]) -> io::Result<()> {
    match io::stdout().write_all(bytes) {
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cli() -> clap::Command {
        clap::Command::new("tool")
            .about("A tool")
            .subcommand(clap::Command::new("put").about("Writes").subcommand(clap::Command::new("deep")))
    }

    #[test]
    fn a_page_per_subcommand_and_a_script_per_shell() {
        let dir = std::env::temp_dir().join(format!("cli-docs-{}", std::process::id()));
        let mut written = write_man_pages(cli(), &dir).unwrap();
        written.sort();
        let names: Vec<String> =
            written.iter().map(|p| p.file_name().unwrap().to_string_lossy().into_owned()).collect();
        assert_eq!(names, ["tool-put-deep.1", "tool-put.1", "tool.1"]);
        assert!(std::fs::read_to_string(dir.join("tool-put.1")).unwrap().contains(".TH tool-put"));
        std::fs::remove_dir_all(&dir).unwrap();
        let bash = String::from_utf8(completions(cli(), clap_complete::Shell::Bash)).unwrap();
        assert!(bash.contains("_tool()") && bash.contains("put"), "{bash}");
    }
}

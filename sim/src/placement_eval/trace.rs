//! Demand traces: `timestamp,value` CSV files (the NAB traces in
//! `../shared/traces`), one resource each. A trace must have a header, at
//! least `TRACE_STEPS_MIN` rows, strictly increasing timestamps at one
//! fixed step, and finite non-negative values; anything else is an error
//! naming the file and line.

use std::path::Path;

pub const TRACE_STEPS_MIN: usize = 64;
pub const TRACE_STEPS_MAX: usize = 1_000_000;

#[derive(Clone, Debug)]
pub struct Trace {
    pub name: String,
    pub step_s: u64,
    pub start_epoch_s: i64,
    /// Demand per step, in the trace's own units.
    pub values: Vec<f64>,
}

#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("{path}:{line}: {problem}")]
    Bad { path: String, line: usize, problem: String },
}

/// Seconds since 1970-01-01 of a `YYYY-MM-DD HH:MM:SS` UTC timestamp.
pub fn parse_timestamp(text: &str) -> Option<i64> {
    let (date, time) = text.trim().split_once(' ')?;
    let mut d = date.split('-').map(|p| p.parse::<i64>().ok());
    let (year, month, day) = (d.next()??, d.next()??, d.next()??);
    let mut t = time.split(':').map(|p| p.parse::<i64>().ok());
    let (hour, minute, second) = (t.next()??, t.next()??, t.next()??);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    // Days from civil (proleptic Gregorian), after H. Hinnant's algorithm.
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + hour * 3_600 + minute * 60 + second)
}

pub fn load(path: &Path) -> Result<Trace, TraceError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| TraceError::Io { path: shown.clone(), source })?;
    let bad = |line: usize, problem: String| TraceError::Bad { path: shown.clone(), line, problem };
    let mut lines = text.lines().enumerate();
    match lines.next() {
        Some((_, header)) if header.trim() == "timestamp,value" => {}
        _ => return Err(bad(1, "expected the header `timestamp,value`".into())),
    }
    let mut stamps = Vec::new();
    let mut values = Vec::new();
    for (index, line) in lines {
        if line.trim().is_empty() {
            continue;
        }
        let line_no = index + 1;
        let (stamp, value) = line.split_once(',').ok_or_else(|| bad(line_no, "expected `timestamp,value`".into()))?;
        let stamp = parse_timestamp(stamp).ok_or_else(|| bad(line_no, format!("bad timestamp {stamp:?}")))?;
        let value: f64 = value.trim().parse().map_err(|_| bad(line_no, format!("bad value {value:?}")))?;
        if !value.is_finite() || value < 0.0 {
            return Err(bad(line_no, format!("value {value} is not a finite non-negative number")));
        }
        if let Some(previous) = stamps.last() {
            let step = stamp - previous;
            let expected = stamps.get(1).map(|s: &i64| s - stamps[0]).unwrap_or(step);
            if step <= 0 || step != expected {
                return Err(bad(line_no, format!("step of {step} s; the trace's step is {expected} s")));
            }
        }
        stamps.push(stamp);
        values.push(value);
        if values.len() > TRACE_STEPS_MAX {
            return Err(bad(line_no, format!("more than {TRACE_STEPS_MAX} rows")));
        }
    }
    if values.len() < TRACE_STEPS_MIN {
        return Err(bad(0, format!("{} rows; at least {TRACE_STEPS_MIN} needed", values.len())));
    }
    let name = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| shown.clone());
    Ok(Trace { name, step_s: (stamps[1] - stamps[0]) as u64, start_epoch_s: stamps[0], values })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_parse_to_epoch_seconds() {
        assert_eq!(parse_timestamp("1970-01-01 00:00:00"), Some(0));
        assert_eq!(parse_timestamp("2015-02-26 21:42:53"), Some(1_424_986_973));
        assert_eq!(parse_timestamp("2014-07-01 00:30:00"), Some(1_404_174_600));
        assert_eq!(parse_timestamp("2014-13-01 00:30:00"), None);
        assert_eq!(parse_timestamp("yesterday"), None);
    }

    #[test]
    fn bad_traces_name_file_and_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("t.csv");
        std::fs::write(&path, "timestamp,value\n2015-01-01 00:00:00,1\n2015-01-01 00:05:00,-3\n").expect("write");
        let error = load(&path).expect_err("negative value").to_string();
        assert!(error.contains("t.csv:3") && error.contains("-3"), "{error}");
        std::fs::write(&path, "timestamp,value\n2015-01-01 00:00:00,1\n2015-01-01 00:05:00,1\n2015-01-01 00:15:00,1\n")
            .expect("write");
        let error = load(&path).expect_err("gap").to_string();
        assert!(error.contains("t.csv:4") && error.contains("step"), "{error}");
        std::fs::write(&path, "time,v\n").expect("write");
        assert!(load(&path).expect_err("header").to_string().contains("header"));
        assert!(load(&dir.path().join("missing.csv")).is_err());
    }
}

//! Demand traces: `timestamp,value` CSV files (the NAB traces in
//! `../shared/traces`), one resource each. A trace must have a header, at
//! least `TRACE_STEPS_MIN` rows, strictly increasing timestamps and finite
//! non-negative values; anything else is an error naming the file and line.
//!
//! Real traces have gaps and irregular steps. The trace's step is the most
//! common distance between two timestamps; every row goes to the step its
//! timestamp rounds to (rows sharing a step are averaged), and a step no
//! row reaches is *missing*: marked in `missing`, it carries the last
//! observed value forward, so the policies see a level demand there
//! rather than a drop to zero, and the report counts such steps.

use std::path::Path;

pub const TRACE_STEPS_MIN: usize = 64;
pub const TRACE_STEPS_MAX: usize = 1_000_000;

#[derive(Clone, Debug)]
pub struct Trace {
    pub name: String,
    pub step_s: u64,
    pub start_epoch_s: i64,
    /// Demand per step, in the trace's own units (a missing step carries
    /// the last observed value).
    pub values: Vec<f64>,
    /// Steps no row of the file reached.
    pub missing: Vec<bool>,
}

impl Trace {
    pub fn missing_steps(&self) -> usize {
        self.missing.iter().filter(|m| **m).count()
    }
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
    // Four-digit years only: the day arithmetic below overflows on years
    // of a dozen digits (found by fuzzing the parser).
    if d.next().is_some() || t.next().is_some() || !(1..=9999).contains(&year) {
        return None;
    }
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || !(0..=23).contains(&hour)
        || !(0..=59).contains(&minute)
        || !(0..=60).contains(&second)
    {
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
    let name = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| shown.clone());
    parse(&shown, name, &text)
}

/// Parses the text of a trace; `shown` names it in errors.
pub fn parse(shown: &str, name: String, text: &str) -> Result<Trace, TraceError> {
    let bad = |line: usize, problem: String| TraceError::Bad { path: shown.to_string(), line, problem };
    let mut lines = text.lines().enumerate();
    match lines.next() {
        Some((_, header)) if header.trim() == "timestamp,value" => {}
        _ => return Err(bad(1, "expected the header `timestamp,value`".into())),
    }
    let mut rows: Vec<(i64, f64)> = Vec::new();
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
        if let Some((previous, _)) = rows.last()
            && stamp <= *previous
        {
            return Err(bad(line_no, format!("timestamp {stamp} s does not follow {previous} s")));
        }
        rows.push((stamp, value));
        if rows.len() > TRACE_STEPS_MAX {
            return Err(bad(line_no, format!("more than {TRACE_STEPS_MAX} rows")));
        }
    }
    if rows.len() < TRACE_STEPS_MIN {
        return Err(bad(0, format!("{} rows; at least {TRACE_STEPS_MIN} needed", rows.len())));
    }
    let step_s = most_common_step(&rows);
    let start = rows[0].0;
    let steps = ((rows[rows.len() - 1].0 - start) as f64 / step_s as f64).round() as usize + 1;
    if steps > TRACE_STEPS_MAX {
        return Err(bad(
            0,
            format!("{steps} steps of {step_s} s between the first and last row; at most {TRACE_STEPS_MAX}"),
        ));
    }
    let mut sums = vec![(0.0f64, 0u32); steps];
    for (stamp, value) in &rows {
        let i = (((stamp - start) as f64 / step_s as f64).round() as usize).min(steps - 1);
        sums[i].0 += value;
        sums[i].1 += 1;
    }
    let missing: Vec<bool> = sums.iter().map(|(_, n)| *n == 0).collect();
    let mut values = Vec::with_capacity(steps);
    let mut last = 0.0;
    for (sum, n) in sums {
        if n > 0 {
            last = sum / n as f64;
        }
        values.push(last);
    }
    Ok(Trace { name, step_s: step_s as u64, start_epoch_s: start, values, missing })
}

/// The most common distance between consecutive timestamps (the smallest
/// of equally common ones).
fn most_common_step(rows: &[(i64, f64)]) -> i64 {
    let mut counts: std::collections::BTreeMap<i64, usize> = std::collections::BTreeMap::new();
    for w in rows.windows(2) {
        *counts.entry(w[1].0 - w[0].0).or_default() += 1;
    }
    counts.iter().max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(a.0))).map(|(step, _)| *step).unwrap_or(1)
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
        assert_eq!(parse_timestamp("2015-01-01 00:-1:00"), None, "negative fields");
        assert_eq!(parse_timestamp("2015-01-01-7 00:00:00"), None, "extra fields");
        assert_eq!(parse_timestamp("9999-12-31 23:59:59"), Some(253_402_300_799));
    }

    /// Regression: cargo-fuzz (`tests/fuzz`, target `trace`) found that a
    /// year of a dozen digits overflowed the day arithmetic, a panic in
    /// debug builds and a wrong timestamp in release ones. This is its
    /// input, minimized to the line that matters.
    #[test]
    fn a_year_of_many_digits_is_refused_not_an_overflow() {
        assert_eq!(parse_timestamp("288888888888015-01-01 00:15:00"), None);
        assert_eq!(parse_timestamp("-288888888888015-01-01 00:15:00"), None);
        let text = "timestamp,value\n288888888888015-01-01 00:15:00,9\n2015-01-01 00:20:00,12\n";
        let error = parse("crash.csv", "crash".into(), text).expect_err("a bad year").to_string();
        assert!(error.contains("crash.csv:2") && error.contains("bad timestamp"), "{error}");
    }

    #[test]
    fn bad_traces_name_file_and_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("t.csv");
        std::fs::write(&path, "timestamp,value\n2015-01-01 00:00:00,1\n2015-01-01 00:05:00,-3\n").expect("write");
        let error = load(&path).expect_err("negative value").to_string();
        assert!(error.contains("t.csv:3") && error.contains("-3"), "{error}");
        std::fs::write(&path, "timestamp,value\n2015-01-01 00:05:00,1\n2015-01-01 00:00:00,1\n").expect("write");
        let error = load(&path).expect_err("backwards").to_string();
        assert!(error.contains("t.csv:3") && error.contains("does not follow"), "{error}");
        std::fs::write(&path, "time,v\n").expect("write");
        assert!(load(&path).expect_err("header").to_string().contains("header"));
        assert!(load(&dir.path().join("missing.csv")).is_err());
    }

    #[test]
    fn gaps_and_irregular_steps_are_marked_and_carried_forward() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("gappy.csv");
        let mut text = String::from("timestamp,value\n");
        let mut t = 1_420_070_400i64; // 2015-01-01 00:00:00
        for i in 0..100 {
            // Steps of 5 minutes, a 20-minute gap after row 50, and row 70
            // 40 s late (irregular).
            t += if i == 0 {
                0
            } else if i == 51 {
                1_200
            } else {
                300
            };
            let late = if i == 70 { 40 } else { 0 };
            let secs = t + late;
            let (d, r) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
            assert_eq!(d, 16_436, "the test stays on 2015-01-01");
            text.push_str(&format!("2015-01-01 {:02}:{:02}:{:02},{}\n", r / 3600, r % 3600 / 60, r % 60, i));
        }
        std::fs::write(&path, text).expect("write");
        let trace = load(&path).expect("a gappy trace loads");
        assert_eq!(trace.step_s, 300);
        assert_eq!(trace.values.len(), 103, "100 rows and the 3 steps of the gap");
        assert_eq!(trace.missing_steps(), 3);
        assert!(trace.missing[51] && trace.missing[53] && !trace.missing[54]);
        assert_eq!(trace.values[51], 50.0, "a missing step carries the last value");
        assert_eq!(trace.values[54], 51.0);
        assert_eq!(trace.values[73], 70.0, "a late row lands on its nearest step");
    }
}

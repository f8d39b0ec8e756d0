//! What a run of the suite found: one result per check, a readable table, JUnit XML.

use std::fmt::Write as _;
use std::time::Duration;

use super::Check;

/// How one check came out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The bot did what the check asks.
    Passed,
    /// It did not: why.
    Failed(String),
    /// Not run: why (the suite was told the bot does not do this).
    Skipped(String),
}

/// One check's result.
#[derive(Clone, Debug)]
pub struct CheckResult {
    /// The check.
    pub check: Check,
    /// How it came out.
    pub verdict: Verdict,
    /// How long it took.
    pub took: Duration,
}

/// The results of a run, in the order the checks ran.
#[derive(Clone, Debug)]
pub struct Report {
    /// The suite's name (the bot's, for JUnit).
    pub name: String,
    /// One per check run.
    pub results: Vec<CheckResult>,
}

impl Report {
    /// Whether no check failed (skipped ones do not count against it).
    #[must_use]
    pub fn passed(&self) -> bool {
        self.failed().is_empty()
    }

    /// The checks that failed.
    #[must_use]
    pub fn failed(&self) -> Vec<Check> {
        self.results
            .iter()
            .filter(|r| matches!(r.verdict, Verdict::Failed(_)))
            .map(|r| r.check)
            .collect()
    }

    /// The verdict of `check`, if it ran.
    #[must_use]
    pub fn verdict(&self, check: Check) -> Option<&Verdict> {
        self.results
            .iter()
            .find(|r| r.check == check)
            .map(|r| &r.verdict)
    }

    /// Panics with the table unless every check passed or was skipped: for a `cargo test`.
    ///
    /// # Panics
    /// If a check failed.
    #[track_caller]
    pub fn assert_passed(&self) {
        if !self.passed() {
            #[allow(clippy::panic)]
            {
                panic!(
                    "{} of {} conformance checks failed:\n{}",
                    self.failed().len(),
                    self.results.len(),
                    self.table()
                );
            }
        }
    }

    /// A plain-text table: check, result, time, and why for failures and skips.
    #[must_use]
    pub fn table(&self) -> String {
        let width = self
            .results
            .iter()
            .map(|r| r.check.name().len())
            .max()
            .unwrap_or(5)
            .max(5);
        let mut out = format!("{:<width$}  result  time\n", "check");
        for r in &self.results {
            let (word, why) = match &r.verdict {
                Verdict::Passed => ("pass", None),
                Verdict::Failed(why) => ("FAIL", Some(why)),
                Verdict::Skipped(why) => ("skip", Some(why)),
            };
            let _ = writeln!(
                out,
                "{:<width$}  {word:<6}  {:>5.1}s",
                r.check.name(),
                r.took.as_secs_f64()
            );
            if let Some(why) = why {
                for line in why.lines() {
                    let _ = writeln!(out, "{:<width$}    {line}", "");
                }
            }
        }
        let failed = self.failed().len();
        let skipped = self
            .results
            .iter()
            .filter(|r| matches!(r.verdict, Verdict::Skipped(_)))
            .count();
        let _ = writeln!(
            out,
            "{} passed, {failed} failed, {skipped} skipped",
            self.results.len() - failed - skipped
        );
        out
    }

    /// The report as JUnit XML: one `<testsuite>` named after the suite, one `<testcase>` per
    /// check (`classname` `switchboard.conformance`), `<failure message=...>` and `<skipped>`.
    #[must_use]
    pub fn junit_xml(&self) -> String {
        let failures = self.failed().len();
        let skipped = self
            .results
            .iter()
            .filter(|r| matches!(r.verdict, Verdict::Skipped(_)))
            .count();
        let total: f64 = self.results.iter().map(|r| r.took.as_secs_f64()).sum();
        let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
        let _ = writeln!(
            out,
            "<testsuites tests=\"{}\" failures=\"{failures}\" time=\"{total:.3}\">",
            self.results.len()
        );
        let _ = writeln!(
            out,
            "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{failures}\" errors=\"0\" skipped=\"{skipped}\" time=\"{total:.3}\">",
            xml_escape(&self.name),
            self.results.len()
        );
        for r in &self.results {
            let _ = write!(
                out,
                "    <testcase classname=\"switchboard.conformance\" name=\"{}\" time=\"{:.3}\"",
                r.check.name(),
                r.took.as_secs_f64()
            );
            match &r.verdict {
                Verdict::Passed => out.push_str("/>\n"),
                Verdict::Failed(why) => {
                    let _ = writeln!(
                        out,
                        ">\n      <failure message=\"{}\">{}</failure>\n    </testcase>",
                        xml_escape(why.lines().next().unwrap_or_default()),
                        xml_escape(why)
                    );
                }
                Verdict::Skipped(why) => {
                    let _ = writeln!(
                        out,
                        ">\n      <skipped message=\"{}\"/>\n    </testcase>",
                        xml_escape(why)
                    );
                }
            }
        }
        out.push_str("  </testsuite>\n</testsuites>\n");
        out
    }
}

/// Text escaped for XML attributes and character data; characters XML 1.0 cannot hold (most
/// control characters) become `?`.
fn xml_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' | '\r' => out.push(c),
            c if c < ' ' || c == '\u{fffe}' || c == '\u{ffff}' => out.push('?'),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report() -> Report {
        Report {
            name: "Bot <&>".to_owned(),
            results: vec![
                CheckResult {
                    check: Check::AnswersForwardedThread,
                    verdict: Verdict::Passed,
                    took: Duration::from_millis(1500),
                },
                CheckResult {
                    check: Check::ReadsRoutingMessage,
                    verdict: Verdict::Failed("said \"hi\" & <nothing>\nsecond line\u{1}".into()),
                    took: Duration::from_millis(20),
                },
                CheckResult {
                    check: Check::HandsOffWhenAsked,
                    verdict: Verdict::Skipped("no trigger".into()),
                    took: Duration::ZERO,
                },
            ],
        }
    }

    #[test]
    fn the_table_names_every_check_and_why_one_failed() {
        let table = report().table();
        assert!(table.contains("answers_forwarded_thread"), "{table}");
        assert!(table.contains("FAIL"), "{table}");
        assert!(table.contains("second line"), "{table}");
        assert!(
            table.ends_with("1 passed, 1 failed, 1 skipped\n"),
            "{table}"
        );
        assert!(!report().passed());
        assert_eq!(report().failed(), [Check::ReadsRoutingMessage]);
    }

    #[test]
    fn junit_escapes_what_the_bot_said() {
        let xml = report().junit_xml();
        assert!(xml.contains("name=\"Bot &lt;&amp;&gt;\""), "{xml}");
        assert!(
            xml.contains("&quot;hi&quot; &amp; &lt;nothing&gt;"),
            "{xml}"
        );
        assert!(!xml.contains('\u{1}'), "{xml}");
        assert!(xml.contains("<skipped message=\"no trigger\"/>"), "{xml}");
        assert!(xml.contains("tests=\"3\" failures=\"1\""), "{xml}");
    }
}

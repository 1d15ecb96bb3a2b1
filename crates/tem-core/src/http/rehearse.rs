//! A rehearsal of a run, before anything is written: the whole input read and counted, and its
//! first lines turned into the requests they would send. Settings that are wrong for every line
//! (a payload line without a base URL, a `{field}` no line has), or a file that is mostly not
//! JSON, are found here instead of as a batch of failed tasks under a code that then refuses
//! the corrected settings.

use super::input::{InputSource, LoadError};
use super::request::{LineError, LineKind, PreparedRequest, RequestTemplate};

/// What a run of an input would do.
#[derive(Debug)]
pub struct Rehearsal {
    /// Non-blank lines: one task each.
    pub lines: u64,
    /// Lines that are not even a JSON object (not JSON, not UTF-8, an array or a scalar), with
    /// the first of them and its reason.
    pub unreadable: u64,
    pub first_unreadable: Option<(u64, String)>,
    /// Every line that cannot become a request, the unreadable ones included.
    pub invalid: u64,
    /// The first lines (up to the sample size asked for), each with its request or its error.
    pub sample: Vec<(u64, Result<PreparedRequest, LineError>)>,
}

impl Rehearsal {
    /// When no line of the sample can become a request: the first line and its error.
    pub fn fails_everywhere(&self) -> Option<(u64, &LineError)> {
        let mut errors = self
            .sample
            .iter()
            .map(|(line, result)| (*line, result.as_ref().err()));
        let (line, first) = errors.next()?;
        let first = first?;
        errors.all(|(_, error)| error.is_some()).then_some((line, first))
    }

    /// Whether most lines are not JSON objects: the wrong file rather than a few bad lines.
    pub fn mostly_unreadable(&self) -> bool {
        self.unreadable * 2 > self.lines
    }
}

/// Reads `source` and prepares its first `sample` lines with `template`; `env` looks up the
/// `${VAR}`s of headers.
pub fn rehearse(
    source: &InputSource,
    template: &RequestTemplate,
    sample: usize,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Rehearsal, LoadError> {
    let mut rehearsal = Rehearsal {
        lines: 0,
        unreadable: 0,
        first_unreadable: None,
        invalid: 0,
        sample: Vec::new(),
    };
    source.for_each_line(|stored| {
        rehearsal.lines += 1;
        if let LineKind::Invalid(reason) = &stored.kind {
            rehearsal.invalid += 1;
            if let Some(why) = reason.strip_prefix("(line): ") {
                rehearsal.unreadable += 1;
                rehearsal
                    .first_unreadable
                    .get_or_insert((stored.line, why.to_owned()));
            }
        }
        if rehearsal.sample.len() < sample {
            rehearsal
                .sample
                .push((stored.line, template.prepare(&stored, env)));
        }
        Ok(())
    })?;
    Ok(rehearsal)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn input(text: &str) -> InputSource {
        InputSource::Memory {
            name: "test".into(),
            bytes: Arc::from(text.as_bytes()),
        }
    }

    fn template(base_url: Option<&str>, path: &str) -> RequestTemplate {
        RequestTemplate {
            base_url: base_url.map(str::to_owned),
            path: Some(path.to_owned()),
            ..RequestTemplate::default()
        }
    }

    #[test]
    fn a_template_wrong_for_every_line_is_found_before_anything_runs() {
        let lines = "{\"id\": 1}\n{\"id\": 2}\n";
        let missing_base = rehearse(&input(lines), &template(None, "/items/{id}"), 10, &|_| None).unwrap();
        let (line, error) = missing_base.fails_everywhere().expect("no line can be sent");
        assert_eq!(line, 1);
        assert!(error.message.contains("base-url"), "{error}");

        let missing_field = rehearse(
            &input(lines),
            &template(Some("http://127.0.0.1:9"), "/items/{name}"),
            10,
            &|_| None,
        )
        .unwrap();
        let (_, error) = missing_field.fails_everywhere().expect("no line has `name`");
        assert_eq!(error.field, "name");
    }

    #[test]
    fn a_few_bad_lines_are_not_a_wrong_setting() {
        let lines = "{\"id\": 1}\n{\"other\": 2}\n";
        let rehearsal = rehearse(
            &input(lines),
            &template(Some("http://127.0.0.1:9"), "/items/{id}"),
            10,
            &|_| None,
        )
        .unwrap();
        assert!(rehearsal.fails_everywhere().is_none());
        assert_eq!(
            rehearsal.sample[0].1.as_ref().unwrap().url,
            "http://127.0.0.1:9/items/1"
        );
        assert!(!rehearsal.mostly_unreadable());
    }

    #[test]
    fn a_file_that_is_mostly_not_json_is_told_apart_from_a_few_bad_lines() {
        let binary = "\u{1}\u{2}garbage\nmore garbage\n{\"id\": 1}\n";
        let rehearsal = rehearse(
            &input(binary),
            &template(Some("http://127.0.0.1:9"), "/"),
            10,
            &|_| None,
        )
        .unwrap();
        assert_eq!(
            (rehearsal.lines, rehearsal.unreadable, rehearsal.invalid),
            (3, 2, 2)
        );
        assert!(rehearsal.mostly_unreadable());
        assert_eq!(
            rehearsal.first_unreadable.as_ref().map(|(line, _)| *line),
            Some(1)
        );
    }
}

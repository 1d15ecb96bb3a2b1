//! The outcomes of one group commit as one JSON parameter, which set-based statements of either
//! backend unpack (`json_each` on SQLite, `jsonb_to_recordset` on Postgres).

use std::borrow::Cow;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::store::{Next, OutcomeRow};
use crate::time::Millis;

/// Every outcome but the plain successes (those travel in [`successes`]) as a JSON array of
/// objects with the fields below: what the history, failure and pause statements read. `None`
/// when every outcome is a plain success, the common case, which then costs no serialisation.
pub(crate) fn others(outcomes: &[OutcomeRow], now: Millis) -> Result<Option<String>> {
    let rows: Vec<Row<'_>> = outcomes
        .iter()
        .filter(|o| o.history || o.pause.is_some() || !matches!(o.next, Next::Complete { .. }))
        .map(|o| row(o, now))
        .collect();
    if rows.is_empty() {
        return Ok(None);
    }
    serde_json::to_string(&rows)
        .map(Some)
        .map_err(|source| Error::Json {
            what: "outcomes",
            source,
        })
}

/// The successes alone (the common case) as compact `[id, token, finished_at, result]` rows;
/// `None` when there are none.
pub(crate) fn successes(outcomes: &[OutcomeRow]) -> Result<Option<String>> {
    let successes: Vec<(i64, i64, Millis, Option<Cow<'_, str>>)> = outcomes
        .iter()
        .filter_map(|o| match &o.next {
            Next::Complete { result } => Some((
                o.task_id.0,
                o.lease_token,
                o.finished_at,
                result.as_deref().map(without_nul),
            )),
            _ => None,
        })
        .collect();
    if successes.is_empty() {
        return Ok(None);
    }
    serde_json::to_string(&successes)
        .map(Some)
        .map_err(|source| Error::Json {
            what: "outcomes",
            source,
        })
}

/// One outcome: where the task goes (`status`, `run_after`, …), the attempt for the history,
/// and the pause it asks for. `refund` is 1 when the attempt is given back uncharged.
#[derive(Serialize)]
struct Row<'a> {
    id: i64,
    token: i64,
    status: &'a str,
    error: Option<Cow<'a, str>>,
    run_after: Option<Millis>,
    task_finished_at: Option<Millis>,
    refund: i64,
    attempt: u32,
    worker: &'a str,
    started_at: Millis,
    finished_at: Millis,
    outcome: &'a str,
    http_status: Option<u16>,
    message: Option<Cow<'a, str>>,
    retry_at: Option<Millis>,
    pause_key: Option<&'a str>,
    pause_until: Option<Millis>,
    pause_reason: Option<Cow<'a, str>>,
    history: bool,
}

fn row(o: &OutcomeRow, now: Millis) -> Row<'_> {
    let (status, run_after, task_finished_at, refund) = match &o.next {
        Next::Complete { .. } => ("completed", None, Some(o.finished_at), 0),
        Next::Retry { run_after } => ("pending", Some(*run_after), None, 0),
        Next::Fail => ("failed", None, Some(o.finished_at), 0),
        Next::Release => ("pending", Some(now), None, 1),
    };
    let error = match &o.next {
        Next::Complete { .. } | Next::Release => None,
        Next::Retry { .. } | Next::Fail => o.message.as_deref().map(without_nul),
    };
    let retry_at = match &o.next {
        Next::Retry { run_after } => Some(*run_after),
        _ => None,
    };
    Row {
        id: o.task_id.0,
        token: o.lease_token,
        status,
        error,
        run_after,
        task_finished_at,
        refund,
        attempt: o.attempt,
        worker: &o.worker,
        started_at: o.started_at,
        finished_at: o.finished_at,
        outcome: o.outcome.as_str(),
        http_status: o.http_status,
        message: o.message.as_deref().map(without_nul),
        retry_at,
        pause_key: o.pause.as_ref().map(|p| p.key.as_ref()),
        pause_until: o.pause.as_ref().map(|p| p.until),
        pause_reason: o.pause.as_ref().map(|p| without_nul(&p.reason)),
        history: o.history,
    }
}

/// Text as the databases can hold it: Postgres refuses NUL in text and jsonb, and an error
/// message quoting a binary response body may carry one. It becomes U+FFFD on every backend.
fn without_nul(text: &str) -> Cow<'_, str> {
    if text.contains('\0') {
        Cow::Owned(text.replace('\0', "\u{FFFD}"))
    } else {
        Cow::Borrowed(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nul_never_reaches_the_json() {
        assert_eq!(without_nul("a\0b"), "a\u{FFFD}b");
        assert!(matches!(without_nul("plain"), Cow::Borrowed("plain")));
    }
}

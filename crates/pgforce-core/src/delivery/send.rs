//! Sending: batches go to Salesforce with several calls in flight; a batch Salesforce refuses as a whole is split
//! until every record has its own verdict; a request that fails on the way (timeout, lost connection, 5xx) while
//! Salesforce is up costs its records an attempt; the first sign of an outage stops the rest, which stay queued at
//! no cost to them.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use serde_json::Value;

use super::batch::{Batch, CallKind, Delivery, KeepJob, Report, Verdict};
use crate::salesforce::{lock, CallError, Client, SfError};

/// Sends waves in order (each wave's calls concurrently), so a later wave's records can reference records the
/// earlier waves created, and reports each request's verdicts as it completes. After connection trouble nothing
/// more is sent: the rest is reported `Unsent`; so is everything not yet sent once `abort` is set. Returns the
/// trouble, if any.
pub fn send_waves(
    client: &Client,
    waves: Vec<Vec<Batch>>,
    concurrency: usize,
    abort: &AtomicBool,
    report: Report<'_>,
    keep_job: KeepJob<'_>,
) -> Option<CallError> {
    let parents: HashSet<usize> = waves.iter().flatten().flat_map(|b| b.links.iter().map(|l| l.2)).collect();
    let answers: Mutex<HashMap<usize, Verdict>> = Mutex::new(HashMap::new());
    let keep = |verdicts: Vec<(usize, Verdict)>| {
        if !parents.is_empty() {
            let mut answers = lock(&answers);
            for (k, v) in verdicts.iter().filter(|(k, _)| parents.contains(k)) {
                answers.insert(*k, v.clone());
            }
        }
        report(verdicts);
    };
    let mut trouble = None;
    for mut wave in waves {
        if trouble.is_some() || abort.load(Ordering::SeqCst) {
            report(wave.iter().flat_map(|b| b.items.iter().map(|(k, _)| (*k, Verdict::Unsent))).collect());
            continue;
        }
        let blocked = fill_links(&mut wave, &lock(&answers));
        if !blocked.is_empty() {
            keep(blocked);
        }
        wave.retain(|b| !b.items.is_empty());
        trouble = send_wave(client, wave, concurrency, abort, &keep, keep_job);
    }
    trouble
}

/// Puts the ids of the parents earlier waves created into the lookups that wait for them; an item whose parent was
/// not written is taken out of its batch, with a `Blocked` verdict.
fn fill_links(wave: &mut [Batch], answers: &HashMap<usize, Verdict>) -> Vec<(usize, Verdict)> {
    let mut blocked = Vec::new();
    for batch in wave.iter_mut() {
        let mut out: HashSet<usize> = HashSet::new();
        for (key, field, parent) in std::mem::take(&mut batch.links) {
            if out.contains(&key) {
                continue;
            }
            let id = match answers.get(&parent) {
                Some(Verdict::Done { id: Some(id), .. }) => id.clone(),
                other => {
                    let failed = match other {
                        Some(Verdict::Failed { code, message, transient: false, .. }) => {
                            Some(format!("{code}: {message}"))
                        }
                        Some(Verdict::Blocked { failed: Some(why), .. }) => Some(why.clone()),
                        _ => None,
                    };
                    out.insert(key);
                    blocked.push((key, Verdict::Blocked { parent, failed }));
                    continue;
                }
            };
            if let Some((_, Value::Object(record))) = batch.items.iter_mut().find(|(k, _)| *k == key) {
                record.insert(field, Value::String(id));
            }
        }
        if !out.is_empty() {
            batch.items.retain(|(k, _)| !out.contains(k));
        }
    }
    blocked
}

/// Sends every batch, `concurrency` calls at a time, and returns a verdict for every item (for tests and tools that
/// want them all at once).
pub fn deliver(client: &Client, batches: Vec<Batch>, concurrency: usize) -> Delivery {
    let verdicts = Mutex::new(Vec::new());
    let report = |v: Vec<(usize, Verdict)>| lock(&verdicts).extend(v);
    let trouble = send_wave(client, batches, concurrency, &AtomicBool::new(false), &report, &|_, _| true);
    Delivery { verdicts: verdicts.into_inner().unwrap_or_else(|p| p.into_inner()), trouble }
}

fn send_wave(
    client: &Client,
    batches: Vec<Batch>,
    concurrency: usize,
    abort: &AtomicBool,
    report: Report<'_>,
    keep_job: KeepJob<'_>,
) -> Option<CallError> {
    let queue = Mutex::new(batches.into_iter().collect::<VecDeque<_>>());
    let stop = AtomicBool::new(false);
    let trouble = Mutex::new(None);
    let workers = concurrency.clamp(1, 64).min(lock(&queue).len().max(1));
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| loop {
                let Some(batch) = lock(&queue).pop_front() else { break };
                if stop.load(Ordering::SeqCst) || abort.load(Ordering::SeqCst) {
                    report(batch.items.iter().map(|(k, _)| (*k, Verdict::Unsent)).collect());
                    continue;
                }
                let mut local = Delivery::default();
                if batch.bulk.is_some() {
                    super::bulk::send(client, &batch, keep_job, &mut local);
                } else {
                    send_split(client, &batch.kind, &batch.items, false, &mut local);
                }
                if let Some(t) = local.trouble {
                    stop.store(true, Ordering::SeqCst);
                    lock(&trouble).get_or_insert(t);
                }
                report(local.verdicts);
            });
        }
    });
    trouble.into_inner().unwrap_or_else(|p| p.into_inner())
}

/// Sends one batch; a whole-request refusal splits it in halves until each record has its own verdict.
/// `maybe_applied`: an earlier call with these records lost its answer, so whatever fails now may be in Salesforce
/// already and stays in doubt.
fn send_split(client: &Client, kind: &CallKind, items: &[(usize, Value)], maybe_applied: bool, out: &mut Delivery) {
    if out.trouble.is_some() {
        out.verdicts.extend(items.iter().map(|(k, _)| (*k, not_sent(maybe_applied))));
        return;
    }
    let records: Vec<&Value> = items.iter().map(|(_, v)| v).collect();
    let mut answer = client.call(kind, &records);
    let mut maybe_applied = maybe_applied;
    // A kept-alive connection the server closed meanwhile fails before the request is read: an update, upsert or
    // delete is simply sent again once, on a new connection (doing it twice does no harm). A create is not: it may
    // have been applied, so it is in doubt. The connection may also have been lost after Salesforce applied the
    // request: a record the second call fails stays in doubt (an upsert may have created it).
    if *kind != CallKind::Create && matches!(&answer, Err(CallError::Failed { code, .. }) if code == "CONNECTION_LOST")
    {
        answer = client.call(kind, &records);
        maybe_applied = true;
    }
    match answer {
        Ok(results) => {
            for (i, (key, _)) in items.iter().enumerate() {
                let verdict = match results.get(i) {
                    Some(r) if r.success => {
                        Verdict::Done { id: r.id.clone(), created: r.created.unwrap_or(*kind == CallKind::Create) }
                    }
                    Some(r) => {
                        let e = r.errors.first().cloned().unwrap_or(SfError {
                            code: "UNKNOWN".into(),
                            message: "failed without an error".into(),
                            fields: vec![],
                        });
                        if *kind == CallKind::Delete && e.code == "ENTITY_IS_DELETED" {
                            // Already gone in Salesforce: the delete's goal is met.
                            Verdict::Done { id: None, created: false }
                        } else {
                            let transient = crate::retry::is_transient(&e.code, &e.message);
                            Verdict::Failed { code: e.code, message: e.message, transient, in_doubt: maybe_applied }
                        }
                    }
                    None => Verdict::Failed {
                        code: "NO_RESULT".into(),
                        message: "Salesforce returned fewer results than records".into(),
                        transient: true,
                        in_doubt: true,
                    },
                };
                out.verdicts.push((*key, verdict));
            }
        }
        Err(CallError::Rejected { code, message, .. }) if items.len() == 1 => {
            let verdict = Verdict::Failed { code, message, transient: false, in_doubt: maybe_applied };
            out.verdicts.push((items[0].0, verdict));
        }
        Err(CallError::Rejected { .. }) => {
            let (a, b) = items.split_at(items.len() / 2);
            send_split(client, kind, a, maybe_applied, out);
            send_split(client, kind, b, maybe_applied, out);
        }
        // Salesforce answers otherwise: this request is the problem (too slow, a server error on its records). It
        // costs its records an attempt; each is retried alone, so one bad record cannot hold the others back.
        Err(CallError::Failed { code, message }) if client.reachable() => {
            let verdict = Verdict::Failed { code, message, transient: true, in_doubt: true };
            out.verdicts.extend(items.iter().map(|(k, _)| (*k, verdict.clone())));
        }
        Err(CallError::Failed { code, message }) => {
            out.verdicts.extend(items.iter().map(|(k, _)| (*k, Verdict::Unanswered)));
            out.trouble = Some(CallError::Unavailable(format!("{code}: {message}")));
        }
        // Not sent now; but if an earlier call with these records lost its answer, they may be in Salesforce.
        Err(e) => {
            out.verdicts.extend(items.iter().map(|(k, _)| (*k, not_sent(maybe_applied))));
            out.trouble = Some(e);
        }
    }
}

/// The verdict of records not sent because of connection trouble: `Unsent`, unless an earlier call with them lost
/// its answer (`maybe_applied`), which leaves them `Unanswered` (in doubt, at no cost).
fn not_sent(maybe_applied: bool) -> Verdict {
    if maybe_applied {
        Verdict::Unanswered
    } else {
        Verdict::Unsent
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn links_take_the_ids_of_created_parents_and_block_children_of_the_others() {
        let mut wave = vec![Batch {
            kind: CallKind::Create,
            items: vec![(1, json!({"Name": "a"})), (2, json!({"Name": "b"})), (3, json!({"Name": "c"}))],
            bytes: 0,
            links: vec![(1, "ParentId".into(), 10), (2, "ParentId".into(), 11), (3, "ParentId".into(), 12)],
            bulk: None,
        }];
        let answers = HashMap::from([
            (10, Verdict::Done { id: Some("001A".into()), created: true }),
            (
                11,
                Verdict::Failed {
                    code: "REQUIRED_FIELD_MISSING".into(),
                    message: "Name".into(),
                    transient: false,
                    in_doubt: false,
                },
            ),
            (
                12,
                Verdict::Failed {
                    code: "UNABLE_TO_LOCK_ROW".into(),
                    message: "locked".into(),
                    transient: true,
                    in_doubt: false,
                },
            ),
        ]);
        let blocked = fill_links(&mut wave, &answers);
        assert_eq!(wave[0].items, vec![(1, json!({"Name": "a", "ParentId": "001A"}))]);
        assert_eq!(
            blocked,
            vec![
                (2, Verdict::Blocked { parent: 11, failed: Some("REQUIRED_FIELD_MISSING: Name".into()) }),
                (3, Verdict::Blocked { parent: 12, failed: None }),
            ]
        );
    }
}

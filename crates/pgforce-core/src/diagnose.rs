//! `salesforce.diagnose()`: the checks of the troubleshooting checklists (settings, login, API budget, each
//! mapping against Salesforce's describe, failures by error code), as rows of `(check, status, detail, hint)`. The
//! checks that need Postgres or the network run in the SQL function; what they found is judged here.

use crate::describe::Described;
use crate::mapping::relationship_column;
use crate::salesforce::{AuthFlow, CallError, Settings};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Ok,
    Warning,
    Error,
}

impl Status {
    pub const fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Warning => "warning",
            Status::Error => "error",
        }
    }
}

/// One row of `salesforce.diagnose()`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub check: String,
    pub status: Status,
    pub detail: String,
    pub hint: Option<String>,
}

impl Finding {
    pub fn ok(check: impl Into<String>, detail: impl Into<String>) -> Finding {
        Finding { check: check.into(), status: Status::Ok, detail: detail.into(), hint: None }
    }

    pub fn warning(check: impl Into<String>, detail: impl Into<String>, hint: impl Into<String>) -> Finding {
        Finding { check: check.into(), status: Status::Warning, detail: detail.into(), hint: Some(hint.into()) }
    }

    pub fn error(check: impl Into<String>, detail: impl Into<String>, hint: impl Into<String>) -> Finding {
        Finding { check: check.into(), status: Status::Error, detail: detail.into(), hint: Some(hint.into()) }
    }
}

/// Whether the settings the configured OAuth flow needs are all there (secrets given in files already read in).
pub fn settings(s: &Settings) -> Finding {
    let mut missing: Vec<&str> = Vec::new();
    if s.login_url.trim().is_empty() {
        missing.push("pgforce.login_url");
    }
    if s.client_id.is_empty() {
        missing.push("pgforce.client_id");
    }
    match s.auth_flow {
        AuthFlow::ClientCredentials if s.client_secret.is_empty() => {
            missing.push("pgforce.client_secret (or pgforce.client_secret_file)")
        }
        AuthFlow::JwtBearer => {
            if s.username.is_empty() {
                missing.push("pgforce.username");
            }
            if s.jwt_key_file.as_os_str().is_empty() {
                missing.push("pgforce.jwt_key_file");
            }
        }
        AuthFlow::RefreshToken if s.refresh_token.is_empty() => {
            missing.push("pgforce.refresh_token (or pgforce.refresh_token_file)")
        }
        _ => {}
    }
    let flow = s.auth_flow.as_str();
    if missing.is_empty() {
        Finding::ok("settings", format!("complete for the {flow} flow"))
    } else {
        Finding::error(
            "settings",
            format!("the {flow} flow needs {}", missing.join(", ")),
            "Set them with ALTER SYSTEM SET … and SELECT pg_reload_conf() (docs/configuration.md).",
        )
    }
}

/// The outcome of a login with the configured credentials: Salesforce's OAuth error verbatim when it failed.
pub fn login(result: &Result<(), CallError>) -> Finding {
    match result {
        Ok(()) => Finding::ok("login", "a token was obtained with the configured credentials"),
        Err(CallError::Unauthorized(why)) => Finding::error(
            "login",
            format!("Salesforce refused the credentials: {why}"),
            "Check pgforce.client_id and the secret (or key, or refresh token) against the connected app, that the \
             app is approved for the integration user, and pgforce.login_url (My Domain for client_credentials).",
        ),
        Err(e) => Finding::error(
            "login",
            format!("Salesforce could not be reached: {e}"),
            "Check pgforce.login_url and that this server can reach it (DNS, firewall, proxy).",
        ),
    }
}

/// API calls used today against `pgforce.max_api_usage`.
pub fn api_usage(usage: Option<(u64, u64)>, max_api_usage: f64) -> Finding {
    let Some((used, limit)) = usage.filter(|(_, limit)| *limit > 0) else {
        return Finding::warning(
            "api usage",
            "unknown: Salesforce has not reported it yet",
            "It is read from the Sforce-Limit-Info header of any call.",
        );
    };
    let fraction = used as f64 / limit as f64;
    let detail = format!("{used} of {limit} API calls used today ({:.1} %)", fraction * 100.0);
    if fraction > max_api_usage {
        Finding::warning(
            "api usage",
            format!("{detail}, above pgforce.max_api_usage ({:.0} %): the worker slows down", max_api_usage * 100.0),
            "Wait for the rolling 24 hours to free calls, raise the org's limit, or lower other integrations' use.",
        )
    } else {
        Finding::ok("api usage", detail)
    }
}

/// What a mapping needs to know about itself for its checks.
#[derive(Debug, Clone)]
pub struct MappingToCheck {
    pub table: String,
    pub sobject: String,
    pub read_write: bool,
    pub upsert_field: Option<String>,
    pub fields: Vec<String>,
}

/// A mapping against Salesforce's describe of its sObject (`Err`: the describe failed); `parent` describes the
/// sObject a relationship points at.
pub fn mapping(
    m: &MappingToCheck,
    described: &Result<std::sync::Arc<Described>, CallError>,
    mut parent: impl FnMut(&str) -> Option<std::sync::Arc<Described>>,
) -> Vec<Finding> {
    let check = format!("mapping {}", m.table);
    let d = match described {
        Ok(d) => d,
        Err(CallError::Rejected { status: 404, .. }) => {
            return vec![Finding::error(
                check,
                format!("the sObject {} does not exist, or the integration user cannot see it", m.sobject),
                "Check the object's API name (custom objects end in __c) and the integration user's profile or permission sets.",
            )];
        }
        Err(e) => {
            return vec![Finding::warning(
                check,
                format!("the describe of {} could not be read: {e}", m.sobject),
                "Run salesforce.diagnose() again once Salesforce answers.",
            )]
        }
    };
    let mut out = Vec::new();
    let mut problems = 0;
    for column in &m.fields {
        if let Some(rel) = relationship_column(column) {
            let lookup = d.relationship(&rel.relationship);
            let Some(lookup) = lookup else {
                problems += 1;
                out.push(Finding::error(
                    check.clone(),
                    format!("column {column}: {} has no relationship named {}", m.sobject, rel.relationship),
                    "Name the column <relationship>__r__<external id field> after the lookup's relationship name.",
                ));
                continue;
            };
            let target = lookup.reference_to.first().cloned().unwrap_or_default();
            let found = parent(&target).and_then(|p| p.field(&rel.external_id_field).cloned());
            match found {
                Some(f) if f.external_id => {}
                Some(_) => {
                    problems += 1;
                    out.push(Finding::error(
                        check.clone(),
                        format!("column {column}: {target}.{} is not an external id", rel.external_id_field),
                        "A parent is referenced by an External ID field: mark the field as one in Salesforce.",
                    ));
                }
                None => {
                    problems += 1;
                    out.push(Finding::error(
                        check.clone(),
                        format!("column {column}: {target} has no field {}", rel.external_id_field),
                        "Check the parent's external id field name.",
                    ));
                }
            }
            continue;
        }
        let Some(f) = d.field(column) else {
            problems += 1;
            out.push(Finding::error(
                check.clone(),
                format!("column {column}: {} has no field {column}, or the integration user cannot see it", m.sobject),
                "Create the field, grant the integration user field-level security on it, or map the table without the column.",
            ));
            continue;
        };
        if m.read_write && (!f.createable || !f.updateable) {
            problems += 1;
            let cannot = match (f.createable, f.updateable) {
                (false, false) => "neither createable nor updateable",
                (false, true) => "not createable (inserts fail)",
                _ => "not updateable (updates fail)",
            };
            out.push(Finding::error(
                check.clone(),
                format!("column {column}: {}.{} is {cannot} for the integration user", m.sobject, f.name),
                "Grant edit access in field-level security, or map the table without the column (formula and system fields are read-only).",
            ));
        }
    }
    if let Some(u) = &m.upsert_field {
        match d.field(u) {
            Some(f) if f.external_id => {}
            Some(f) => {
                problems += 1;
                out.push(Finding::error(
                    check.clone(),
                    format!("upsert field {u}: {}.{} is not an external id", m.sobject, f.name),
                    "Mark it as an External ID (and Unique) in Salesforce, or map the table with another upsert field.",
                ));
            }
            None => {} // reported with the fields
        }
    }
    if problems == 0 {
        out.push(Finding::ok(
            check,
            format!(
                "{} exists; its {} mapped field(s) exist and are {}",
                m.sobject,
                m.fields.len(),
                if m.read_write { "writable" } else { "readable" }
            ),
        ));
    }
    out
}

/// What a read_only mapping's reads are, for their check (`_read_state`).
#[derive(Debug, Clone, Default)]
pub struct ReadingToCheck {
    pub table: String,
    /// It has a read state (a mapping made read_only before reading existed has none until altered).
    pub reading: bool,
    /// Seconds since a read last reached the end of Salesforce's changes (`None`: none has yet).
    pub caught_up_secs_ago: Option<f64>,
    pub rows_failed: i64,
    pub last_error: Option<String>,
    /// The mapping's read interval, in seconds.
    pub interval_secs: f64,
}

/// A read_only mapping's reads, judged: not reading, records that could not be read, or reads that stopped
/// reaching the end (more than three intervals and a minute behind).
pub fn reading(r: &ReadingToCheck) -> Finding {
    let check = format!("reading {}", r.table);
    let quoted = r.table.replace('\'', "''");
    if !r.reading {
        return Finding::warning(
            check,
            "the mapping is read_only but does not read from Salesforce (it was made before reading existed)",
            format!("SELECT salesforce.alter_mapping('{quoted}', mode => 'read_only');"),
        );
    }
    if r.rows_failed > 0 {
        return Finding::warning(
            check,
            format!(
                "{} record(s) could not be read into the table; the last: {}",
                r.rows_failed,
                r.last_error.as_deref().unwrap_or("(no message)")
            ),
            format!("Widen the column or fix the value in Salesforce, then: SELECT salesforce.reload('{quoted}');"),
        );
    }
    match r.caught_up_secs_ago {
        None => Finding::ok(check, "the first read (loading every record) is under way"),
        Some(ago) if ago > 3.0 * r.interval_secs + 60.0 => Finding::warning(
            check,
            format!(
                "no read has reached the end of Salesforce's changes for {ago:.0} s (interval {:.0} s)",
                r.interval_secs
            ),
            "Look at connection_state and read_error in salesforce.sync_status, and at the server log.",
        ),
        Some(ago) => Finding::ok(check, format!("caught up {ago:.0} s ago")),
    }
}

/// The hint for a common Salesforce (or pgforce) error code.
pub fn hint_for(code: &str) -> &'static str {
    match code {
        "INSUFFICIENT_ACCESS" | "INSUFFICIENT_ACCESS_OR_READONLY" | "INSUFFICIENT_ACCESS_ON_CROSS_REFERENCE_ENTITY" => {
            "Permission denied: give the integration user access to the object, the record (sharing) and the fields, then salesforce.retry_failed()."
        }
        "DUPLICATE_VALUE" => {
            "A unique field already holds this value in another record: fix the value in Postgres (or the other record), then retry."
        }
        "REQUIRED_FIELD_MISSING" => {
            "A required field is empty: map the column that fills it and give it a value, then retry."
        }
        "FIELD_CUSTOM_VALIDATION_EXCEPTION" => {
            "A validation rule refused the record: fix the values in Postgres (the message names the rule's text), or relax the rule, then retry."
        }
        "CANNOT_INSERT_UPDATE_ACTIVATE_ENTITY" => {
            "An Apex trigger or flow failed on the record: read its message, fix the automation or the data, then retry."
        }
        "DUPLICATES_DETECTED" => {
            "A duplicate rule blocked the record: merge the duplicates, allow the integration user to save them, or change the rule, then retry."
        }
        "UNABLE_TO_LOCK_ROW" => {
            "Another process held the record (or its parent): pgforce retries these by itself; many of them mean a busy parent or automation, so spread the load or raise pgforce.max_attempts."
        }
        "INVALID_FIELD" | "INVALID_FIELD_FOR_INSERT_UPDATE" => {
            "A mapped field does not exist or is not writable: see the mapping rows of salesforce.diagnose()."
        }
        "ENTITY_IS_DELETED" | "INVALID_CROSS_REFERENCE_KEY" => {
            "The record was deleted in Salesforce (or never existed): clear the row's sfid and re-capture it, or delete the row."
        }
        "NUMBER_OUTSIDE_VALID_RANGE" | "STRING_TOO_LONG" => {
            "A value does not fit its field: shorten or round it in Postgres, or widen the field, then retry."
        }
        "NOT_SENT" => "pgforce refused to send it (the message says why): fix the row, then retry.",
        "REQUEST_TIMEOUT" | "CONNECTION_LOST" => {
            "Requests with the record kept failing on the way: look for slow automation on the object, or raise pgforce.request_timeout, then retry."
        }
        _ => "Read the error message; fix the data or the org, then salesforce.retry_failed().",
    }
}

/// Failed entries grouped by error code: (code, how many, one message of the group).
pub fn failures(groups: &[(String, i64, String)]) -> Vec<Finding> {
    if groups.is_empty() {
        return vec![Finding::ok("failures", "no failed changes in the log")];
    }
    groups
        .iter()
        .map(|(code, count, example)| {
            Finding::error(
                format!("failures {code}"),
                format!("{count} failed change{}, e.g. {example}", if *count == 1 { "" } else { "s" }),
                hint_for(code),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_are_judged_by_their_state() {
        let r = ReadingToCheck {
            table: "salesforce.account".into(),
            reading: true,
            interval_secs: 30.0,
            ..Default::default()
        };
        assert_eq!(reading(&r).status, Status::Ok);
        assert_eq!(reading(&ReadingToCheck { caught_up_secs_ago: Some(40.0), ..r.clone() }).status, Status::Ok);
        let behind = reading(&ReadingToCheck { caught_up_secs_ago: Some(600.0), ..r.clone() });
        assert_eq!(behind.status, Status::Warning);
        assert!(behind.detail.contains("600 s"), "{behind:?}");
        let failed =
            reading(&ReadingToCheck { rows_failed: 2, last_error: Some("record 001: too long".into()), ..r.clone() });
        assert!(
            failed.detail.contains("2 record(s)")
                && failed.hint.as_deref().is_some_and(|h| h.contains("reload('salesforce.account')")),
            "{failed:?}"
        );
        let idle = reading(&ReadingToCheck { reading: false, ..r });
        assert!(
            idle.hint
                .as_deref()
                .is_some_and(|h| h.contains("alter_mapping('salesforce.account', mode => 'read_only')")),
            "{idle:?}"
        );
    }
    use crate::describe::FieldDescription;
    use serde_json::json;
    use std::sync::Arc;

    fn described(sobject: &str, fields: serde_json::Value) -> Arc<Described> {
        let fields = fields.as_array().unwrap().iter().filter_map(FieldDescription::from_describe).collect();
        Arc::new(Described::new(sobject, fields))
    }

    fn contact() -> Arc<Described> {
        described(
            "Contact",
            json!([
                {"name": "LastName", "type": "string", "createable": true, "updateable": true},
                {"name": "CreatedDate", "type": "datetime", "createable": false, "updateable": false},
                {"name": "Code__c", "type": "string", "createable": true, "updateable": false},
                {"name": "Email", "type": "email", "createable": true, "updateable": true},
                {"name": "External_Id__c", "type": "string", "createable": true, "updateable": true, "externalId": true},
                {"name": "AccountId", "type": "reference", "createable": true, "updateable": true,
                 "relationshipName": "Account", "referenceTo": ["Account"]}
            ]),
        )
    }

    fn mapped(fields: &[&str], upsert: Option<&str>) -> MappingToCheck {
        MappingToCheck {
            table: "public.contact".into(),
            sobject: "Contact".into(),
            read_write: true,
            upsert_field: upsert.map(str::to_string),
            fields: fields.iter().map(|f| f.to_string()).collect(),
        }
    }

    #[test]
    fn a_mapping_is_checked_field_by_field_against_the_describe() {
        let account = described("Account", json!([{"name": "Code__c", "type": "string", "externalId": true}]));
        let parent = |name: &str| (name == "Account").then(|| account.clone());
        let fine = mapping(&mapped(&["lastname", "account__code__c"], Some("external_id__c")), &Ok(contact()), parent);
        assert_eq!(fine.len(), 1);
        assert_eq!(fine[0].status, Status::Ok, "{fine:?}");

        let found = mapping(
            &mapped(&["lastname", "nickname__c", "createddate", "code__c", "email"], Some("email")),
            &Ok(contact()),
            parent,
        );
        let details: Vec<(&str, &str)> = found.iter().map(|f| (f.status.as_str(), f.detail.as_str())).collect();
        assert_eq!(
            details,
            [
                ("error", "column nickname__c: Contact has no field nickname__c, or the integration user cannot see it"),
                ("error", "column createddate: Contact.CreatedDate is neither createable nor updateable for the integration user"),
                ("error", "column code__c: Contact.Code__c is not updateable (updates fail) for the integration user"),
                ("error", "upsert field email: Contact.Email is not an external id"),
            ]
        );
        let read_only = MappingToCheck { read_write: false, ..mapped(&["createddate"], None) };
        assert_eq!(mapping(&read_only, &Ok(contact()), parent)[0].status, Status::Ok, "read-only mappings never write");

        let missing = CallError::Rejected { status: 404, code: "NOT_FOUND".into(), message: "not found".into() };
        let gone = mapping(&mapped(&["lastname"], None), &Err(missing), parent);
        assert_eq!(gone[0].status, Status::Error);
        assert!(gone[0].detail.starts_with("the sObject Contact does not exist"), "{:?}", gone[0]);
    }

    #[test]
    fn settings_name_what_the_flow_lacks_and_failures_come_with_hints() {
        let mut s = Settings {
            login_url: "https://login.salesforce.com".into(),
            auth_flow: AuthFlow::ClientCredentials,
            client_id: "id".into(),
            client_secret: String::new(),
            username: String::new(),
            jwt_key_file: Default::default(),
            refresh_token: String::new(),
            jwt_audience: String::new(),
            api_version: "62.0".into(),
            request_timeout: std::time::Duration::from_secs(30),
            allow_insecure_http: false,
        };
        let f = settings(&s);
        assert_eq!(f.status, Status::Error);
        assert!(f.detail.contains("pgforce.client_secret"), "{}", f.detail);
        s.client_secret = "secret".into();
        assert_eq!(settings(&s).status, Status::Ok);
        let login_failed = login(&Err(CallError::Unauthorized("invalid_client: invalid client credentials".into())));
        assert_eq!(
            login_failed.detail,
            "Salesforce refused the credentials: invalid_client: invalid client credentials"
        );
        let rows = failures(&[("DUPLICATE_VALUE".into(), 2, "DUPLICATE_VALUE: duplicate value found".into())]);
        assert_eq!(rows[0].check, "failures DUPLICATE_VALUE");
        assert!(rows[0].hint.as_deref().unwrap_or_default().starts_with("A unique field"));
        assert_eq!(failures(&[])[0].status, Status::Ok);
        assert_eq!(api_usage(Some((95, 100)), 0.9).status, Status::Warning);
        assert_eq!(api_usage(Some((5, 100)), 0.9).status, Status::Ok);
    }
}

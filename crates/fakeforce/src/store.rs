//! The org's records and the write rules every endpoint shares: field validation, required fields, unique and
//! external-id fields, lookups by id or by the parent's external id, deletes, and an undo log so `allOrNone` and
//! failed chunks really roll back.

use crate::errors::{ApiError, RecordError};
use crate::ids::{self, IdMint};
use crate::model::{FieldDef, FieldType, Model, SYSTEM_FIELDS};
use crate::values::{self, BadValue};
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::sync::Arc;

#[derive(Debug, Clone)]
pub struct Record {
    pub object: usize,
    pub id: String,
    /// Declared fields by their canonical API name.
    pub fields: Map<String, Value>,
    pub deleted: bool,
    pub created_date: String,
    pub modified_date: String,
    /// Who last changed it, when it was not the integration user (`PATCH /fakeforce/admin/records/...`).
    pub modified_by: Option<String>,
    /// How many writes (create, update, upsert, delete) reached this record: lets tests prove "sent exactly once".
    pub writes: u64,
}

impl Record {
    /// The value of a field or system field, by canonical or any-case name.
    pub fn get(&self, name: &str) -> Option<Value> {
        match name.to_ascii_lowercase().as_str() {
            "id" => Some(Value::String(self.id.clone())),
            "isdeleted" => Some(Value::Bool(self.deleted)),
            "createddate" => Some(Value::String(self.created_date.clone())),
            "lastmodifieddate" => Some(Value::String(self.modified_date.clone())),
            // Whole seconds, as Salesforce keeps it: records changed within a second share a stamp.
            "systemmodstamp" => Some(Value::String(whole_seconds(&self.modified_date))),
            "createdbyid" => Some(Value::String(crate::ids::integration_user())),
            "lastmodifiedbyid" => {
                Some(Value::String(self.modified_by.clone().unwrap_or_else(crate::ids::integration_user)))
            }
            _ => self.fields.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.clone()),
        }
    }
}

/// `2024-01-02T03:04:05.678+0000` → `2024-01-02T03:04:05.000+0000`.
fn whole_seconds(datetime: &str) -> String {
    match (datetime.get(..20), datetime.get(23..)) {
        (Some(head), Some(zone)) if datetime.as_bytes().get(19) == Some(&b'.') => format!("{head}000{zone}"),
        _ => datetime.to_string(),
    }
}

/// A record body as sent, checked against the model: values coerced, lookups by external id still to resolve.
#[derive(Debug, Default)]
pub struct Prepared {
    pub id: Option<String>,
    values: Vec<(usize, Value)>,
    parent_refs: Vec<ParentRef>,
    /// Per-record problems found while preparing (too long, malformed lookup id, read-only field…).
    pub error: Option<RecordError>,
}

#[derive(Debug)]
struct ParentRef {
    field: usize,
    parent: usize,
    ext_field: String,
    value: String,
}

impl Prepared {
    /// The sent value of a field by name (for fault rules that match on field values).
    pub fn value_of(&self, model: &Model, object: usize, name: &str) -> Option<&Value> {
        let def = model.object_at(object);
        self.values.iter().find(|(i, _)| def.fields[*i].name.eq_ignore_ascii_case(name)).map(|(_, v)| v)
    }
}

enum Undo {
    Remove(String),
    Restore(Box<Record>),
}

/// Changes made by one unit of work, undone in reverse order on rollback.
#[derive(Default)]
pub struct Txn {
    undo: Vec<Undo>,
}

impl Txn {
    /// Moves another unit's changes into this one (a committed chunk joins the request's undo log).
    pub fn absorb(&mut self, other: Txn) {
        self.undo.extend(other.undo);
    }
}

pub struct Store {
    pub model: Arc<Model>,
    mint: IdMint,
    records: HashMap<String, Record>,
    /// Ids per object in creation order, for queries.
    order: Vec<Vec<String>>,
    /// (object, field index) of unique or external-id fields → lower-cased value → ids holding it.
    indexed: HashMap<(usize, usize), HashMap<String, Vec<String>>>,
    /// Records deleted for good (purged from the recycle bin, merged away), for `sobjects/X/deleted`: object, id,
    /// when (ms). Soft-deleted records still in the bin are listed from the records themselves.
    pub hard_deleted: Vec<(usize, String, i64)>,
    /// The delete log was purged up to here (ms): `sobjects/X/deleted` from earlier is `INVALID_REPLICATION_DATE`.
    pub delete_log_floor: i64,
}

fn index_key(v: &Value) -> Option<String> {
    match v {
        Value::Null => None,
        Value::String(s) if s.is_empty() => None,
        Value::String(s) => Some(s.to_lowercase()),
        other => Some(other.to_string().to_lowercase()),
    }
}

impl Store {
    pub fn new(model: Arc<Model>) -> Self {
        let mut indexed = HashMap::new();
        for (i, o) in model.objects().enumerate() {
            for (j, f) in o.fields.iter().enumerate() {
                if f.unique || f.external_id {
                    indexed.insert((i, j), HashMap::new());
                }
            }
        }
        let order = vec![Vec::new(); model.objects().count()];
        Store {
            model,
            mint: IdMint::default(),
            records: HashMap::new(),
            order,
            indexed,
            hard_deleted: Vec::new(),
            delete_log_floor: 0,
        }
    }

    pub fn clear(&mut self) {
        *self = Store::new(self.model.clone());
    }

    pub fn get(&self, id: &str) -> Option<&Record> {
        self.records.get(id)
    }

    /// Live (not deleted) records of an object in creation order.
    pub fn live(&self, object: usize) -> impl Iterator<Item = &Record> {
        self.order[object].iter().filter_map(|id| self.records.get(id)).filter(|r| !r.deleted)
    }

    /// All records of an object, deleted ones included (admin read-back).
    pub fn all(&self, object: usize) -> impl Iterator<Item = &Record> {
        self.order[object].iter().filter_map(|id| self.records.get(id))
    }

    /// Checks a record body against the object's fields. Unknown fields and undeserializable values refuse the
    /// whole request, as Salesforce's JSON parser does; anything else is kept as the record's own error.
    pub fn prepare(&self, object: usize, body: &Map<String, Value>) -> Result<Prepared, ApiError> {
        let def = self.model.object_at(object);
        let mut out = Prepared::default();
        for (key, value) in body {
            if key == "attributes" {
                continue;
            }
            if key.eq_ignore_ascii_case("id") {
                out.id = match value {
                    Value::String(s) => Some(s.clone()),
                    Value::Null => None,
                    _ => return Err(ApiError::json_parse(format!("Cannot deserialize instance of id from {value}"))),
                };
                continue;
            }
            if let Value::Object(reference) = value {
                let Some(lookup) = self.model.relationship(object, key) else {
                    return Err(no_such_column(key, &def.name));
                };
                let parent_ref = self.parent_ref(object, lookup, reference)?;
                out.parent_refs.push(parent_ref);
                continue;
            }
            if let Some(system) = SYSTEM_FIELDS.iter().find(|s| s.eq_ignore_ascii_case(key)) {
                out.error.get_or_insert_with(|| not_writable(system));
                continue;
            }
            let Some(field) = self.model.field(object, key) else {
                return Err(no_such_column(key, &def.name));
            };
            let field_index = def.fields.iter().position(|f| f.name == field.name).unwrap_or_default();
            if field.read_only {
                out.error.get_or_insert_with(|| not_writable(&field.name));
                continue;
            }
            match values::coerce(field, value) {
                Ok(v) => {
                    if field.kind == FieldType::Reference {
                        if let Some(e) = self.check_lookup_id(field, &v) {
                            out.error.get_or_insert(e);
                        }
                    }
                    out.values.push((field_index, v));
                }
                Err(BadValue::Parse(message)) => return Err(ApiError::json_parse(message)),
                Err(BadValue::TooLong { max }) => {
                    let shown = value.as_str().map(str::to_string).unwrap_or_else(|| value.to_string());
                    out.error.get_or_insert_with(|| {
                        RecordError::new(
                            "STRING_TOO_LONG",
                            format!("{}: data value too large: {shown} (max length={max})", field.label()),
                            &[&field.name],
                        )
                    });
                }
                Err(BadValue::OutOfRange) => {
                    out.error.get_or_insert_with(|| {
                        RecordError::new(
                            "NUMBER_OUTSIDE_VALID_RANGE",
                            format!("{}: value outside of valid range on numeric field: {value}", field.label()),
                            &[&field.name],
                        )
                    });
                }
                Err(BadValue::InvalidEmail) => {
                    let shown = value.as_str().unwrap_or_default();
                    out.error.get_or_insert_with(|| {
                        RecordError::new(
                            "INVALID_EMAIL_ADDRESS",
                            format!("{}: invalid email address: {shown}", field.label()),
                            &[&field.name],
                        )
                    });
                }
            }
        }
        Ok(out)
    }

    fn parent_ref(
        &self,
        object: usize,
        lookup: &FieldDef,
        reference: &Map<String, Value>,
    ) -> Result<ParentRef, ApiError> {
        let def = self.model.object_at(object);
        let field = def.fields.iter().position(|f| f.name == lookup.name).unwrap_or_default();
        let parent_name = lookup.reference_to.as_deref().unwrap_or_default();
        let parent = self.model.object(parent_name).ok_or_else(ApiError::not_found)?;
        let keys: Vec<(&String, &Value)> = reference.iter().filter(|(k, _)| *k != "attributes").collect();
        let [(ext_name, ext_value)] = keys.as_slice() else {
            return Err(ApiError::new(
                400,
                "INVALID_FIELD",
                format!(
                    "The foreign key reference for {} must name exactly one external id field",
                    lookup.relationship_name.as_deref().unwrap_or_default()
                ),
            ));
        };
        let ext = self.model.field(parent.index, ext_name).filter(|f| f.external_id).ok_or_else(|| {
            ApiError::new(
                400,
                "INVALID_FIELD",
                format!(
                    "Field name provided, {ext_name} is not an External ID or indexed field for {}",
                    parent.def.name
                ),
            )
        })?;
        let value = match ext_value {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            other => return Err(ApiError::json_parse(format!("Cannot deserialize external id value {other}"))),
        };
        Ok(ParentRef { field, parent: parent.index, ext_field: ext.name.clone(), value })
    }

    fn check_lookup_id(&self, field: &FieldDef, v: &Value) -> Option<RecordError> {
        let raw = v.as_str()?;
        if raw.is_empty() {
            return None;
        }
        let label = field.label();
        let Some(id) = ids::normalize(raw) else {
            return Some(RecordError::new(
                "MALFORMED_ID",
                format!("{label}: id value of incorrect type: {raw}"),
                &[&field.name],
            ));
        };
        let target = field.reference_to.as_deref().and_then(|t| self.model.object(t));
        let prefix_ok = target.is_some_and(|t| id.starts_with(t.def.key_prefix.as_str()));
        if !prefix_ok {
            return Some(RecordError::new(
                "FIELD_INTEGRITY_EXCEPTION",
                format!("{label}: id value of incorrect type: {raw}"),
                &[&field.name],
            ));
        }
        None
    }

    /// Ids of live records whose external-id or unique field equals `value` (ignoring case).
    pub fn find_by(&self, object: usize, field: &str, value: &str) -> Vec<String> {
        let def = self.model.object_at(object);
        let Some(j) = def.fields.iter().position(|f| f.name.eq_ignore_ascii_case(field)) else {
            return Vec::new();
        };
        self.indexed
            .get(&(object, j))
            .and_then(|idx| idx.get(&value.to_lowercase()))
            .map(|ids| ids.iter().filter(|id| self.records.get(*id).is_some_and(|r| !r.deleted)).cloned().collect())
            .unwrap_or_default()
    }

    /// Normalises an id for `object`: `Err` carries Salesforce's MALFORMED_ID for this object.
    pub fn object_id(&self, object: usize, raw: &str) -> Result<String, RecordError> {
        let def = self.model.object_at(object);
        ids::normalize(raw).filter(|id| id.starts_with(def.key_prefix.as_str())).ok_or_else(|| {
            RecordError::new("MALFORMED_ID", format!("{} ID: id value of incorrect type: {raw}", def.name), &["Id"])
        })
    }

    pub fn create(&mut self, txn: &mut Txn, object: usize, input: &Prepared) -> Result<String, RecordError> {
        if input.id.is_some() {
            return Err(RecordError::new("INVALID_FIELD", "cannot specify Id in an insert call", &["Id"]));
        }
        if let Some(e) = &input.error {
            return Err(e.clone());
        }
        let def = self.model.object_at(object);
        let mut fields = Map::new();
        for f in &def.fields {
            if let Some(d) = &f.default {
                fields.insert(f.name.clone(), d.clone());
            }
        }
        self.apply_values(object, &mut fields, input)?;
        check_required(def.fields.iter(), &fields)?;
        let id = self.mint.mint(&def.key_prefix);
        self.check_unique(object, &id, &fields)?;
        let now = values::now_datetime();
        let record = Record {
            object,
            id: id.clone(),
            fields,
            deleted: false,
            created_date: now.clone(),
            modified_date: now,
            modified_by: None,
            writes: 1,
        };
        self.put(record, None);
        self.order[object].push(id.clone());
        txn.undo.push(Undo::Remove(id.clone()));
        Ok(id)
    }

    pub fn update(&mut self, txn: &mut Txn, object: usize, id: &str, input: &Prepared) -> Result<String, RecordError> {
        let current = self.records.get(id).filter(|r| r.object == object).cloned();
        let Some(current) = current else {
            return Err(RecordError::new("INVALID_CROSS_REFERENCE_KEY", "invalid cross reference id", &[]));
        };
        if current.deleted {
            return Err(RecordError::new("ENTITY_IS_DELETED", "entity is deleted", &[]));
        }
        if let Some(e) = &input.error {
            return Err(e.clone());
        }
        let def = self.model.object_at(object);
        let mut fields = current.fields.clone();
        self.apply_values(object, &mut fields, input)?;
        let touched: Vec<&FieldDef> = input.values.iter().map(|(j, _)| &def.fields[*j]).collect();
        check_required(touched.into_iter(), &fields)?;
        self.check_unique(object, id, &fields)?;
        let mut updated = current.clone();
        updated.fields = fields;
        updated.modified_date = values::now_datetime();
        updated.modified_by = None;
        updated.writes += 1;
        self.put(updated, Some(&current));
        txn.undo.push(Undo::Restore(Box::new(current)));
        Ok(id.to_string())
    }

    /// Upsert by an external-id field (or `Id`): 0 matches creates, 1 updates, more is DUPLICATE_EXTERNAL_ID.
    /// Returns the id and whether it was created.
    pub fn upsert(
        &mut self,
        txn: &mut Txn,
        object: usize,
        ext_field: &FieldDef,
        input: &Prepared,
    ) -> Result<(String, bool), RecordError> {
        let value = input.value_of(&self.model, object, &ext_field.name).and_then(index_key);
        let Some(value) = value else {
            return Err(RecordError::new("MISSING_ARGUMENT", format!("{} not specified", ext_field.name), &[]));
        };
        let matches = self.find_by(object, &ext_field.name, &value);
        match matches.as_slice() {
            [] => self.create(txn, object, input).map(|id| (id, true)),
            [id] => {
                let id = id.clone();
                self.update(txn, object, &id, input).map(|id| (id, false))
            }
            many => Err(RecordError::new(
                "DUPLICATE_EXTERNAL_ID",
                format!("{}: more than one record found for external id field: {:?}", ext_field.name, many),
                &[&ext_field.name],
            )),
        }
    }

    pub fn delete(&mut self, txn: &mut Txn, id: &str) -> Result<String, RecordError> {
        let Some(current) = self.records.get(id).cloned() else {
            return Err(RecordError::new("INVALID_CROSS_REFERENCE_KEY", "invalid cross reference id", &[]));
        };
        if current.deleted {
            return Err(RecordError::new("ENTITY_IS_DELETED", "entity is deleted", &[]));
        }
        let mut gone = current.clone();
        gone.deleted = true;
        gone.modified_date = values::now_datetime();
        gone.writes += 1;
        self.put(gone, Some(&current));
        txn.undo.push(Undo::Restore(Box::new(current)));
        Ok(id.to_string())
    }

    /// Another user changes a live record's fields (by their names, any case): the admin endpoint's way to show
    /// that someone else worked on a record. No rules run.
    /// `stamped_ms_ago`: the change committed late, stamped that long before now (a long transaction's change
    /// becomes visible after records stamped later than it).
    pub fn edit_as(
        &mut self,
        object: usize,
        id: &str,
        fields: &Map<String, Value>,
        by: &str,
        stamped_ms_ago: i64,
    ) -> Result<(), String> {
        let current = self.records.get(id).filter(|r| r.object == object && !r.deleted).cloned();
        let Some(current) = current else { return Err(format!("no live record {id}")) };
        let def = self.model.object_at(object);
        let mut edited = current.clone();
        for (name, value) in fields {
            let f = def.fields.iter().find(|f| f.name.eq_ignore_ascii_case(name)).ok_or(format!("no field {name}"))?;
            edited.fields.insert(f.name.clone(), value.clone());
        }
        edited.modified_date = values::format_datetime(values::now_ms() - stamped_ms_ago.max(0));
        edited.modified_by = Some(by.to_string());
        self.put(edited, Some(&current));
        Ok(())
    }

    pub fn rollback(&mut self, txn: Txn) {
        for undo in txn.undo.into_iter().rev() {
            match undo {
                Undo::Remove(id) => {
                    if let Some(r) = self.records.get(&id).cloned() {
                        self.unindex(&r);
                        self.records.remove(&id);
                        if self.order[r.object].last() == Some(&id) {
                            self.order[r.object].pop();
                        } else {
                            self.order[r.object].retain(|x| x != &id);
                        }
                    }
                }
                Undo::Restore(previous) => {
                    let now = self.records.get(&previous.id).cloned();
                    self.put(*previous, now.as_ref());
                }
            }
        }
    }

    fn apply_values(
        &self,
        object: usize,
        fields: &mut Map<String, Value>,
        input: &Prepared,
    ) -> Result<(), RecordError> {
        let def = self.model.object_at(object);
        for (j, v) in &input.values {
            let field = &def.fields[*j];
            if field.kind == FieldType::Reference {
                if let Some(raw) = v.as_str().filter(|s| !s.is_empty()) {
                    let id = ids::normalize(raw).unwrap_or_default();
                    if self.records.get(&id).is_none_or(|r| r.deleted) {
                        return Err(RecordError::new("INVALID_CROSS_REFERENCE_KEY", "invalid cross reference id", &[]));
                    }
                    fields.insert(field.name.clone(), Value::String(id));
                    continue;
                }
            }
            fields.insert(field.name.clone(), v.clone());
        }
        for r in &input.parent_refs {
            let found = self.find_by(r.parent, &r.ext_field, &r.value);
            let parent_name = &self.model.object_at(r.parent).name;
            match found.as_slice() {
                [id] => {
                    fields.insert(def.fields[r.field].name.clone(), Value::String(id.clone()));
                }
                [] => {
                    return Err(RecordError::new(
                        "INVALID_FIELD",
                        format!(
                            "Foreign key external ID: {} not found for field {} in entity {parent_name}",
                            r.value, r.ext_field
                        ),
                        &[],
                    ))
                }
                _ => {
                    return Err(RecordError::new(
                        "INVALID_FIELD",
                        format!(
                        "Foreign key external ID: {} matched more than one record for field {} in entity {parent_name}",
                        r.value, r.ext_field
                    ),
                        &[],
                    ))
                }
            }
        }
        Ok(())
    }

    fn check_unique(&self, object: usize, id: &str, fields: &Map<String, Value>) -> Result<(), RecordError> {
        let def = self.model.object_at(object);
        for (j, f) in def.fields.iter().enumerate().filter(|(_, f)| f.unique) {
            let Some(key) = fields.get(&f.name).and_then(index_key) else { continue };
            let holders = self.indexed.get(&(object, j)).and_then(|idx| idx.get(&key));
            let other = holders.and_then(|ids| {
                ids.iter().find(|other| other.as_str() != id && self.records.get(*other).is_some_and(|r| !r.deleted))
            });
            if let Some(other) = other {
                return Err(RecordError::new(
                    "DUPLICATE_VALUE",
                    format!("duplicate value found: {} duplicates value on record with id: {other}", f.name),
                    &[&f.name],
                ));
            }
        }
        Ok(())
    }

    /// Purges a record: gone as if the recycle bin were emptied (or it lost a merge): `queryAll` no longer returns
    /// it. Returns whether it existed.
    pub fn purge(&mut self, id: &str) -> bool {
        let Some(record) = self.records.remove(id) else { return false };
        self.unindex(&record);
        self.order[record.object].retain(|x| x != id);
        // The delete log keeps the first delete's time (a record purged from the bin was deleted then).
        let at = if record.deleted {
            values::parse_datetime(&record.modified_date).unwrap_or_else(values::now_ms)
        } else {
            values::now_ms()
        };
        self.hard_deleted.push((record.object, record.id, at));
        true
    }

    /// Restores a record from the recycle bin. Its `SystemModstamp` stays as the delete set it: Salesforce does not
    /// document that an undelete moves it, so fakeforce takes the worst case, in which no poll by stamp sees it.
    pub fn undelete(&mut self, id: &str) -> Result<(), String> {
        let current =
            self.records.get(id).filter(|r| r.deleted).cloned().ok_or(format!("{id} is not in the recycle bin"))?;
        let mut back = current.clone();
        back.deleted = false;
        back.writes += 1;
        self.put(back, Some(&current));
        Ok(())
    }

    /// Merges `losers` into `master`, as Salesforce's merge does: the master is saved (its stamp moves), the losers
    /// are deleted for good (no `queryAll` shows them; `sobjects/X/deleted` does).
    pub fn merge(&mut self, master: &str, losers: &[String]) -> Result<(), String> {
        let current =
            self.records.get(master).filter(|r| !r.deleted).cloned().ok_or(format!("no live record {master}"))?;
        for loser in losers {
            if loser == master || self.records.get(loser).is_none_or(|r| r.deleted || r.object != current.object) {
                return Err(format!("{loser} cannot be merged into {master}"));
            }
        }
        let mut saved = current.clone();
        saved.modified_date = values::now_datetime();
        saved.writes += 1;
        self.put(saved, Some(&current));
        for loser in losers {
            self.purge(loser);
        }
        Ok(())
    }

    /// Ids of `object`'s records deleted within `[start, end)` (ms), soft or for good, with when.
    pub fn deleted_between(&self, object: usize, start: i64, end: i64) -> Vec<(String, i64)> {
        let mut out: Vec<(String, i64)> = self
            .all(object)
            .filter(|r| r.deleted)
            .filter_map(|r| Some((r.id.clone(), values::parse_datetime(&r.modified_date)?)))
            .chain(self.hard_deleted.iter().filter(|(o, _, _)| *o == object).map(|(_, id, at)| (id.clone(), *at)))
            .filter(|(_, at)| (start..end).contains(at))
            .collect();
        out.sort_by_key(|(_, at)| *at);
        out
    }

    /// Ids of `object`'s live records changed within `[start, end)` (ms).
    pub fn updated_between(&self, object: usize, start: i64, end: i64) -> Vec<String> {
        self.live(object)
            .filter(|r| values::parse_datetime(&r.modified_date).is_some_and(|at| (start..end).contains(&at)))
            .map(|r| r.id.clone())
            .collect()
    }

    /// Stores `record`, moving its index entries from `previous`.
    fn put(&mut self, record: Record, previous: Option<&Record>) {
        if let Some(p) = previous {
            self.unindex(p);
        }
        let def = self.model.object_at(record.object);
        for (j, f) in def.fields.iter().enumerate() {
            if let (Some(idx), Some(key)) =
                (self.indexed.get_mut(&(record.object, j)), record.fields.get(&f.name).and_then(index_key))
            {
                idx.entry(key).or_default().push(record.id.clone());
            }
        }
        self.records.insert(record.id.clone(), record);
    }

    fn unindex(&mut self, record: &Record) {
        let def = self.model.object_at(record.object);
        for (j, f) in def.fields.iter().enumerate() {
            if let (Some(idx), Some(key)) =
                (self.indexed.get_mut(&(record.object, j)), record.fields.get(&f.name).and_then(index_key))
            {
                if let Some(ids) = idx.get_mut(&key) {
                    ids.retain(|x| x != &record.id);
                    if ids.is_empty() {
                        idx.remove(&key);
                    }
                }
            }
        }
    }
}

fn no_such_column(field: &str, object: &str) -> ApiError {
    ApiError::new(400, "INVALID_FIELD", format!("No such column '{field}' on sobject of type {object}"))
}

fn not_writable(field: &str) -> RecordError {
    RecordError::new(
        "INVALID_FIELD_FOR_INSERT_UPDATE",
        format!("Unable to create/update fields: {field}. Please check the security settings of this field and verify that it is read/write for your profile or permission set."),
        &[field],
    )
}

/// On create every required field must have a value; on update only the fields being set are checked.
fn check_required<'a>(
    fields: impl Iterator<Item = &'a FieldDef>,
    values: &Map<String, Value>,
) -> Result<(), RecordError> {
    let missing: Vec<&str> = fields
        .filter(|f| f.required)
        .filter(|f| values.get(&f.name).and_then(index_key).is_none())
        .map(|f| f.name.as_str())
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(RecordError::new(
            "REQUIRED_FIELD_MISSING",
            format!("Required fields are missing: [{}]", missing.join(", ")),
            &missing,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn store() -> Store {
        Store::new(Arc::new(Model::builtin()))
    }

    fn body(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn rollback_restores_records_and_indexes() {
        let mut s = store();
        let contact = s.model.object("Contact").map(|o| o.index).unwrap_or_default();
        let mut setup = Txn::default();
        let p = s.prepare(contact, &body(json!({"LastName": "A", "External_Id__c": "x1"}))).expect("prepare");
        let id = s.create(&mut setup, contact, &p).expect("create");
        let mut txn = Txn::default();
        let p2 = s.prepare(contact, &body(json!({"LastName": "B", "External_Id__c": "x2"}))).expect("prepare");
        s.update(&mut txn, contact, &id, &p2).expect("update");
        let p3 = s.prepare(contact, &body(json!({"LastName": "C", "External_Id__c": "x1"}))).expect("prepare");
        s.create(&mut txn, contact, &p3).expect("create reuses x1 after the update freed it");
        s.rollback(txn);
        assert_eq!(s.find_by(contact, "External_Id__c", "X1"), vec![id.clone()]);
        assert!(s.find_by(contact, "External_Id__c", "x2").is_empty());
        assert_eq!(s.get(&id).and_then(|r| r.get("LastName")), Some(json!("A")));
        assert_eq!(s.live(contact).count(), 1);
    }

    #[test]
    fn another_user_edits_a_record_and_the_integration_users_next_write_is_its_own() {
        let mut s = store();
        let contact = s.model.object("Contact").map(|o| o.index).unwrap_or_default();
        let mut txn = Txn::default();
        let p = s.prepare(contact, &body(json!({"LastName": "A", "External_Id__c": "x1"}))).expect("prepare");
        let id = s.create(&mut txn, contact, &p).expect("create");
        let fields = body(json!({"lastname": "By hand", "External_Id__c": "x9"}));
        s.edit_as(contact, &id, &fields, "005000000000002AAA", 0).expect("edit");
        let r = s.get(&id).expect("record");
        assert_eq!(
            (r.get("LastName"), r.get("LastModifiedById")),
            (Some(json!("By hand")), Some(json!("005000000000002AAA")))
        );
        assert_eq!(s.find_by(contact, "External_Id__c", "x9"), vec![id.clone()], "indexes follow the edit");
        assert!(s.edit_as(contact, &id, &body(json!({"Nope__c": 1})), "005000000000002AAA", 0).is_err());
        let p = s.prepare(contact, &body(json!({"LastName": "B"}))).expect("prepare");
        s.update(&mut txn, contact, &id, &p).expect("update");
        assert_eq!(s.get(&id).and_then(|r| r.get("LastModifiedById")), Some(json!(crate::ids::integration_user())));
    }

    #[test]
    fn required_unique_and_lookup_rules() {
        let mut s = store();
        let contact = s.model.object("Contact").map(|o| o.index).unwrap_or_default();
        let mut txn = Txn::default();
        let missing = s.prepare(contact, &body(json!({"FirstName": "A"}))).expect("prepare");
        let e = s.create(&mut txn, contact, &missing).expect_err("LastName is required");
        assert_eq!(
            (e.status_code.as_str(), e.message.as_str()),
            ("REQUIRED_FIELD_MISSING", "Required fields are missing: [LastName]")
        );
        let bad_parent = s
            .prepare(contact, &body(json!({"LastName": "A", "Account": {"External_Id__c": "nope"}})))
            .expect("prepare");
        let e = s.create(&mut txn, contact, &bad_parent).expect_err("no such parent");
        assert_eq!(e.message, "Foreign key external ID: nope not found for field External_Id__c in entity Account");
        let unknown = s.prepare(contact, &body(json!({"LastName": "A", "Nope__c": 1}))).expect_err("unknown field");
        assert_eq!(unknown.message, "No such column 'Nope__c' on sobject of type Contact");
    }
}

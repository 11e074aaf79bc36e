//! The org's data model: which objects exist and what their fields accept. Declared in the config file or taken
//! from the built-in default (Account, Contact, Lead, Opportunity, Case and a custom Invoice__c).

use serde::Deserialize;
use std::collections::HashMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FieldType {
    Id,
    String,
    Textarea,
    Email,
    Phone,
    Url,
    Picklist,
    Boolean,
    Int,
    Double,
    Currency,
    Percent,
    Date,
    Datetime,
    Reference,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldDef {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: FieldType,
    /// Maximum length of text fields.
    #[serde(default)]
    pub length: Option<usize>,
    #[serde(default)]
    pub required: bool,
    #[serde(default)]
    pub unique: bool,
    #[serde(default)]
    pub external_id: bool,
    #[serde(default)]
    pub read_only: bool,
    /// Value given on create when the field is not sent (picklists such as Lead.Status).
    #[serde(default)]
    pub default: Option<serde_json::Value>,
    /// For lookups: the parent object and the relationship name used in `"Account": {"Ext__c": …}` references.
    #[serde(default)]
    pub reference_to: Option<String>,
    #[serde(default)]
    pub relationship_name: Option<String>,
    /// For numbers (double, currency, percent): total digits and digits after the point, as in Salesforce's
    /// `Number(precision, scale)`. Undeclared: 18 digits, 2 decimals for currency and none for the others, as
    /// Salesforce's defaults for a new field.
    #[serde(default)]
    pub precision: Option<u32>,
    #[serde(default)]
    pub scale: Option<u32>,
}

impl FieldDef {
    fn new(name: &str, kind: FieldType) -> Self {
        FieldDef {
            name: name.to_string(),
            kind,
            length: match kind {
                FieldType::String | FieldType::Picklist | FieldType::Url => Some(255),
                FieldType::Email => Some(80),
                FieldType::Phone => Some(40),
                FieldType::Textarea => Some(32_000),
                _ => None,
            },
            required: false,
            unique: false,
            external_id: false,
            read_only: false,
            default: None,
            reference_to: None,
            relationship_name: None,
            precision: None,
            scale: None,
        }
    }
    fn number(mut self, precision: u32, scale: u32) -> Self {
        self.precision = Some(precision);
        self.scale = Some(scale);
        self
    }

    /// `(precision, scale)` of a number field; None for other types.
    pub fn number_limits(&self) -> Option<(u32, u32)> {
        let default_scale = match self.kind {
            FieldType::Currency => 2,
            FieldType::Double | FieldType::Percent => 0,
            _ => return None,
        };
        Some((self.precision.unwrap_or(18), self.scale.unwrap_or(default_scale)))
    }
    fn len(mut self, n: usize) -> Self {
        self.length = Some(n);
        self
    }
    fn required(mut self) -> Self {
        self.required = true;
        self
    }
    fn default_value(mut self, v: &str) -> Self {
        self.default = Some(serde_json::Value::String(v.to_string()));
        self
    }
    fn lookup(name: &str, parent: &str, relationship: &str) -> Self {
        let mut f = FieldDef::new(name, FieldType::Reference);
        f.reference_to = Some(parent.to_string());
        f.relationship_name = Some(relationship.to_string());
        f
    }
    fn external_id() -> Self {
        let mut f = FieldDef::new("External_Id__c", FieldType::String);
        f.unique = true;
        f.external_id = true;
        f
    }

    /// Human label used in Salesforce's messages ("Last Name", "Account ID").
    pub fn label(&self) -> String {
        let base = self.name.trim_end_matches("__c");
        let base = base.strip_suffix("Id").filter(|_| self.kind == FieldType::Reference).unwrap_or(base);
        let mut out = String::new();
        let mut prev_lower = false;
        for c in base.chars() {
            if c == '_' {
                out.push(' ');
                prev_lower = false;
                continue;
            }
            if c.is_ascii_uppercase() && prev_lower {
                out.push(' ');
            }
            prev_lower = c.is_ascii_lowercase() || c.is_ascii_digit();
            out.push(c);
        }
        if self.kind == FieldType::Reference {
            out.push_str(" ID");
        }
        out
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ObjectDef {
    pub name: String,
    pub key_prefix: String,
    #[serde(default)]
    pub fields: Vec<FieldDef>,
}

impl ObjectDef {
    fn new(name: &str, key_prefix: &str, mut fields: Vec<FieldDef>) -> Self {
        fields.push(FieldDef::external_id());
        ObjectDef { name: name.into(), key_prefix: key_prefix.into(), fields }
    }
}

/// Fields every object has, maintained by the platform and read-only to the API.
pub const SYSTEM_FIELDS: [&str; 7] =
    ["Id", "IsDeleted", "CreatedDate", "LastModifiedDate", "SystemModstamp", "CreatedById", "LastModifiedById"];

#[derive(Debug, Clone)]
pub struct Model {
    objects: Vec<ObjectDef>,
    by_name: HashMap<String, usize>,
    by_prefix: HashMap<String, usize>,
    /// (object index, lower-case field name) → field index
    fields: HashMap<(usize, String), usize>,
}

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("object {0} is declared twice")]
    DuplicateObject(String),
    #[error("object {object}: key prefix {prefix:?} must be 3 letters or digits and not used by another object")]
    BadPrefix { object: String, prefix: String },
    #[error("object {object}: field {field} is declared twice or is a system field")]
    DuplicateField { object: String, field: String },
    #[error("object {object}: lookup {field} needs reference_to naming a declared object and a relationship_name")]
    BadLookup { object: String, field: String },
    #[error("object {object}: number field {field} needs 1 to 18 digits of precision and a scale no larger than it")]
    BadNumber { object: String, field: String },
}

pub struct ObjectRef<'m> {
    pub index: usize,
    pub def: &'m ObjectDef,
}

impl Model {
    pub fn new(objects: Vec<ObjectDef>) -> Result<Self, ModelError> {
        let mut by_name = HashMap::new();
        let mut by_prefix = HashMap::new();
        let mut fields = HashMap::new();
        for (i, o) in objects.iter().enumerate() {
            if by_name.insert(o.name.to_ascii_lowercase(), i).is_some() {
                return Err(ModelError::DuplicateObject(o.name.clone()));
            }
            let prefix_ok = o.key_prefix.len() == 3 && o.key_prefix.bytes().all(|c| c.is_ascii_alphanumeric());
            if !prefix_ok || by_prefix.insert(o.key_prefix.clone(), i).is_some() {
                return Err(ModelError::BadPrefix { object: o.name.clone(), prefix: o.key_prefix.clone() });
            }
            for (j, f) in o.fields.iter().enumerate() {
                let key = f.name.to_ascii_lowercase();
                let system = SYSTEM_FIELDS.iter().any(|s| s.eq_ignore_ascii_case(&f.name));
                if system || fields.insert((i, key), j).is_some() {
                    return Err(ModelError::DuplicateField { object: o.name.clone(), field: f.name.clone() });
                }
                let declared = f.precision.is_some() || f.scale.is_some();
                let number_ok = match f.number_limits() {
                    Some((precision, scale)) => (1..=18).contains(&precision) && scale <= precision,
                    None => !declared,
                };
                if !number_ok {
                    return Err(ModelError::BadNumber { object: o.name.clone(), field: f.name.clone() });
                }
            }
        }
        for o in &objects {
            for f in o.fields.iter().filter(|f| f.kind == FieldType::Reference) {
                let target_ok = f.reference_to.as_ref().is_some_and(|t| by_name.contains_key(&t.to_ascii_lowercase()));
                if !target_ok || f.relationship_name.is_none() {
                    return Err(ModelError::BadLookup { object: o.name.clone(), field: f.name.clone() });
                }
            }
        }
        Ok(Model { objects, by_name, by_prefix, fields })
    }

    /// Account, Contact, Lead, Opportunity and Case with their usual required fields, plus `Invoice__c` with a lookup
    /// to Account and a namespaced field; each has a unique external id field `External_Id__c`.
    pub fn builtin() -> Self {
        use FieldType::*;
        let f = FieldDef::new;
        let objects = vec![
            ObjectDef::new(
                "Account",
                "001",
                vec![
                    f("Name", String).required(),
                    f("AccountNumber", String).len(40),
                    f("Phone", Phone),
                    f("Website", Url),
                    f("Industry", Picklist).len(40),
                    f("AnnualRevenue", Currency).number(18, 0),
                    f("NumberOfEmployees", Int),
                    f("Description", Textarea),
                    // The account hierarchy: Salesforce's standard self-lookup.
                    FieldDef::lookup("ParentId", "Account", "Parent"),
                ],
            ),
            ObjectDef::new(
                "Contact",
                "003",
                vec![
                    f("FirstName", String).len(40),
                    f("LastName", String).len(80).required(),
                    f("Email", Email),
                    f("Phone", Phone),
                    f("Title", String).len(128),
                    f("Birthdate", Date),
                    f("HasOptedOutOfEmail", Boolean),
                    FieldDef::lookup("AccountId", "Account", "Account"),
                ],
            ),
            ObjectDef::new(
                "Lead",
                "00Q",
                vec![
                    f("FirstName", String).len(40),
                    f("LastName", String).len(80).required(),
                    f("Company", String).required(),
                    f("Email", Email),
                    f("Status", Picklist).len(40).required().default_value("Open - Not Contacted"),
                    f("AnnualRevenue", Currency).number(18, 0),
                ],
            ),
            ObjectDef::new(
                "Opportunity",
                "006",
                vec![
                    f("Name", String).len(120).required(),
                    f("StageName", Picklist).required(),
                    f("CloseDate", Date).required(),
                    f("Amount", Currency).number(16, 2),
                    f("Probability", Percent).number(3, 0),
                    FieldDef::lookup("AccountId", "Account", "Account"),
                ],
            ),
            ObjectDef::new(
                "Case",
                "500",
                vec![
                    f("Subject", String),
                    f("Status", Picklist).len(40).required().default_value("New"),
                    f("Origin", Picklist).len(40),
                    f("Priority", Picklist).len(40),
                    f("Description", Textarea),
                    FieldDef::lookup("AccountId", "Account", "Account"),
                    FieldDef::lookup("ContactId", "Contact", "Contact"),
                ],
            ),
            ObjectDef::new(
                "Invoice__c",
                "a01",
                vec![
                    f("Name", String).len(80),
                    f("Amount__c", Currency).number(18, 6),
                    f("Due_Date__c", Date),
                    f("Paid__c", Boolean),
                    f("Issued_At__c", Datetime),
                    // A managed package's field: namespace `acme`.
                    f("acme__Tier__c", Picklist).len(40),
                    FieldDef::lookup("Account__c", "Account", "Account__r"),
                ],
            ),
        ];
        // The built-in declarations are checked by `builtin_model_is_valid`.
        Model::new(objects).unwrap_or_else(|e| panic!("built-in model is invalid: {e}"))
    }

    pub fn object(&self, name: &str) -> Option<ObjectRef<'_>> {
        let index = *self.by_name.get(&name.to_ascii_lowercase())?;
        Some(ObjectRef { index, def: &self.objects[index] })
    }

    pub fn object_at(&self, index: usize) -> &ObjectDef {
        &self.objects[index]
    }

    pub fn object_by_prefix(&self, prefix: &str) -> Option<ObjectRef<'_>> {
        let index = *self.by_prefix.get(prefix)?;
        Some(ObjectRef { index, def: &self.objects[index] })
    }

    pub fn objects(&self) -> impl Iterator<Item = &ObjectDef> {
        self.objects.iter()
    }

    /// A declared (non-system) field of an object, found ignoring case as Salesforce does.
    pub fn field(&self, object: usize, name: &str) -> Option<&FieldDef> {
        let j = *self.fields.get(&(object, name.to_ascii_lowercase()))?;
        Some(&self.objects[object].fields[j])
    }

    /// The lookup field whose relationship name is `name` (`Account` → `AccountId`, `Account__r` → `Account__c`).
    pub fn relationship(&self, object: usize, name: &str) -> Option<&FieldDef> {
        self.objects[object]
            .fields
            .iter()
            .find(|f| f.relationship_name.as_deref().is_some_and(|r| r.eq_ignore_ascii_case(name)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_model_is_valid() {
        let m = Model::builtin();
        let contact = m.object("contact").expect("contact");
        assert_eq!(contact.def.name, "Contact");
        assert!(m.field(contact.index, "lastname").is_some_and(|f| f.required));
        assert_eq!(m.relationship(contact.index, "account").map(|f| f.name.as_str()), Some("AccountId"));
        assert_eq!(m.object_by_prefix("a01").map(|o| o.def.name.as_str()), Some("Invoice__c"));
    }

    #[test]
    fn labels_read_like_salesforce() {
        let m = Model::builtin();
        let c = m.object("Contact").expect("contact").index;
        assert_eq!(m.field(c, "LastName").map(FieldDef::label).as_deref(), Some("Last Name"));
        assert_eq!(m.field(c, "AccountId").map(FieldDef::label).as_deref(), Some("Account ID"));
        assert_eq!(m.field(c, "External_Id__c").map(FieldDef::label).as_deref(), Some("External Id"));
    }

    #[test]
    fn bad_declarations_are_refused() {
        let dup = ObjectDef { name: "A__c".into(), key_prefix: "a00".into(), fields: vec![] };
        assert!(matches!(Model::new(vec![dup.clone(), dup]), Err(ModelError::DuplicateObject(_))));
        let bad_lookup = ObjectDef {
            name: "B__c".into(),
            key_prefix: "a02".into(),
            fields: vec![FieldDef::lookup("X__c", "Nope__c", "X__r")],
        };
        assert!(matches!(Model::new(vec![bad_lookup]), Err(ModelError::BadLookup { .. })));
    }
}

//! Read-back: a SOQL subset (`SELECT fields | COUNT() FROM object [WHERE conditions joined by AND, OR and
//! parentheses] [ORDER BY …] [LIMIT n] [OFFSET n]`, with `=`, `!=`, `<>`, `<`, `<=`, `>`, `>=`, `LIKE`, `IN`, `NOT IN`, one level of parent fields such
//! as `Account.Name`) and the record JSON shape the query and sObject GET endpoints return.

use crate::errors::ApiError;
use crate::model::{FieldType, SYSTEM_FIELDS};
use crate::store::{Record, Store};
use crate::values;
use serde_json::{json, Map, Value};
use std::cmp::Ordering;

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Word(String),
    Str(String),
    Num(f64),
    Temporal(String),
    Sym(String),
}

fn malformed(near: &str) -> ApiError {
    ApiError::new(400, "MALFORMED_QUERY", format!("unexpected token: {near}"))
}

fn tokenize(q: &str) -> Result<Vec<Token>, ApiError> {
    let chars: Vec<char> = q.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if c == '\'' {
            let mut s = String::new();
            i += 1;
            loop {
                match chars.get(i) {
                    None => return Err(malformed("unterminated string literal")),
                    Some('\\') => {
                        let escaped = chars.get(i + 1).copied().ok_or_else(|| malformed("\\"))?;
                        s.push(match escaped {
                            'n' => '\n',
                            't' => '\t',
                            'r' => '\r',
                            other => other,
                        });
                        i += 2;
                    }
                    Some('\'') => {
                        i += 1;
                        break;
                    }
                    Some(ch) => {
                        s.push(*ch);
                        i += 1;
                    }
                }
            }
            out.push(Token::Str(s));
        } else if c.is_ascii_digit() || (c == '-' && chars.get(i + 1).is_some_and(char::is_ascii_digit)) {
            let start = i;
            i += 1;
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || ".:+-".contains(chars[i])) {
                i += 1;
            }
            let text: String = chars[start..i].iter().collect();
            if values::parse_datetime(&text).is_some() && text.len() >= 10 {
                out.push(Token::Temporal(text));
            } else {
                out.push(Token::Num(text.parse().map_err(|_| malformed(&text))?));
            }
        } else if c.is_alphabetic() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_' || chars[i] == '.') {
                i += 1;
            }
            out.push(Token::Word(chars[start..i].iter().collect()));
        } else {
            let two: String = chars[i..(i + 2).min(chars.len())].iter().collect();
            if ["!=", "<>", "<=", ">="].contains(&two.as_str()) {
                out.push(Token::Sym(two));
                i += 2;
            } else if "=<>(),".contains(c) {
                out.push(Token::Sym(c.to_string()));
                i += 1;
            } else {
                return Err(malformed(&c.to_string()));
            }
        }
    }
    Ok(out)
}

#[derive(Debug, Clone, PartialEq)]
enum Literal {
    Null,
    Bool(bool),
    Str(String),
    Num(f64),
    Temporal(String),
}

#[derive(Debug)]
enum Test {
    Cmp(String, Literal),
    Like(String),
    In(Vec<Literal>, bool),
}

/// A WHERE clause.
#[derive(Debug)]
enum Filter {
    Test(Condition),
    All(Vec<Filter>),
    Any(Vec<Filter>),
}

impl Filter {
    fn conditions(&self) -> Vec<&Condition> {
        match self {
            Filter::Test(c) => vec![c],
            Filter::All(fs) | Filter::Any(fs) => fs.iter().flat_map(Filter::conditions).collect(),
        }
    }

    fn holds(&self, store: &Store, record: &Record) -> bool {
        match self {
            Filter::Test(c) => {
                let v = value_at(store, record, &c.field);
                match &c.test {
                    // Ids compare exactly (their case is significant), as Salesforce orders them.
                    Test::Cmp(op, Literal::Str(id)) if c.field.eq_ignore_ascii_case("id") => {
                        op_holds(op, v.as_ref().and_then(Value::as_str).map(|x| x.cmp(id.as_str())))
                    }
                    Test::Cmp(op, lit) => op_holds(op, compare(&v, lit)),
                    Test::Like(p) => like(&v, p),
                    Test::In(list, negated) => list.iter().any(|l| compare(&v, l) == Some(Ordering::Equal)) != *negated,
                }
            }
            Filter::All(fs) => fs.iter().all(|f| f.holds(store, record)),
            Filter::Any(fs) => fs.iter().any(|f| f.holds(store, record)),
        }
    }
}

#[derive(Debug)]
struct Condition {
    field: String,
    test: Test,
}

#[derive(Debug)]
pub struct Query {
    count: bool,
    fields: Vec<String>,
    object: String,
    filter: Option<Filter>,
    order: Vec<(String, bool)>,
    limit: Option<usize>,
    offset: usize,
}

impl Query {
    /// The fields selected, as written.
    pub fn fields(&self) -> &[String] {
        &self.fields
    }

    /// The object queried.
    pub fn object(&self) -> &str {
        &self.object
    }

    /// `SELECT COUNT()`.
    pub fn is_count(&self) -> bool {
        self.count
    }
}

struct Parser {
    tokens: Vec<Token>,
    pos: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.pos)
    }
    fn next(&mut self) -> Option<Token> {
        let t = self.tokens.get(self.pos).cloned();
        self.pos += 1;
        t
    }
    fn keyword(&mut self, kw: &str) -> bool {
        if matches!(self.peek(), Some(Token::Word(w)) if w.eq_ignore_ascii_case(kw)) {
            self.pos += 1;
            true
        } else {
            false
        }
    }
    fn expect_keyword(&mut self, kw: &str) -> Result<(), ApiError> {
        if self.keyword(kw) {
            Ok(())
        } else {
            Err(self.unexpected())
        }
    }
    fn sym(&mut self, s: &str) -> bool {
        if matches!(self.peek(), Some(Token::Sym(x)) if x == s) {
            self.pos += 1;
            true
        } else {
            false
        }
    }
    fn unexpected(&self) -> ApiError {
        match self.peek() {
            Some(Token::Word(w)) | Some(Token::Sym(w)) | Some(Token::Temporal(w)) => malformed(w),
            Some(Token::Str(s)) => malformed(&format!("'{s}'")),
            Some(Token::Num(n)) => malformed(&n.to_string()),
            None => malformed("<end of query>"),
        }
    }
    fn ident(&mut self) -> Result<String, ApiError> {
        match self.peek() {
            Some(Token::Word(w)) => {
                let w = w.clone();
                self.pos += 1;
                Ok(w)
            }
            _ => Err(self.unexpected()),
        }
    }
    fn literal(&mut self) -> Result<Literal, ApiError> {
        match self.next() {
            Some(Token::Str(s)) => Ok(Literal::Str(s)),
            Some(Token::Num(n)) => Ok(Literal::Num(n)),
            Some(Token::Temporal(t)) => Ok(Literal::Temporal(t)),
            Some(Token::Word(w)) if w.eq_ignore_ascii_case("null") => Ok(Literal::Null),
            Some(Token::Word(w)) if w.eq_ignore_ascii_case("true") => Ok(Literal::Bool(true)),
            Some(Token::Word(w)) if w.eq_ignore_ascii_case("false") => Ok(Literal::Bool(false)),
            _ => {
                self.pos -= 1;
                Err(self.unexpected())
            }
        }
    }
}

pub fn parse(q: &str) -> Result<Query, ApiError> {
    let mut p = Parser { tokens: tokenize(q)?, pos: 0 };
    p.expect_keyword("SELECT")?;
    let mut count = false;
    let mut fields = Vec::new();
    if matches!(p.peek(), Some(Token::Word(w)) if w.eq_ignore_ascii_case("count"))
        && p.tokens.get(p.pos + 1) == Some(&Token::Sym("(".into()))
    {
        p.pos += 1;
        p.sym("(");
        if !p.sym(")") {
            return Err(p.unexpected());
        }
        count = true;
    } else {
        loop {
            fields.push(p.ident()?);
            if !p.sym(",") {
                break;
            }
        }
    }
    p.expect_keyword("FROM")?;
    let object = p.ident()?;
    let filter = if p.keyword("WHERE") { Some(filter(&mut p)?) } else { None };
    let mut order = Vec::new();
    if p.keyword("ORDER") {
        p.expect_keyword("BY")?;
        loop {
            let f = p.ident()?;
            let asc = !p.keyword("DESC");
            if asc {
                p.keyword("ASC");
            }
            order.push((f, asc));
            if !p.sym(",") {
                break;
            }
        }
    }
    let mut limit = None;
    let mut offset = 0;
    if p.keyword("LIMIT") {
        match p.next() {
            Some(Token::Num(n)) if n >= 0.0 => limit = Some(n as usize),
            _ => return Err(malformed("LIMIT")),
        }
    }
    if p.keyword("OFFSET") {
        match p.next() {
            Some(Token::Num(n)) if n >= 0.0 => offset = n as usize,
            _ => return Err(malformed("OFFSET")),
        }
    }
    if p.peek().is_some() {
        return Err(p.unexpected());
    }
    Ok(Query { count, fields, object, filter, order, limit, offset })
}

/// `a OR b OR …`, each `x AND y AND …`, each a condition or a parenthesised filter (AND binds tighter, as in SOQL).
fn filter(p: &mut Parser) -> Result<Filter, ApiError> {
    let mut any = vec![all_of(p)?];
    while p.keyword("OR") {
        any.push(all_of(p)?);
    }
    Ok(if any.len() == 1 { any.remove(0) } else { Filter::Any(any) })
}

fn all_of(p: &mut Parser) -> Result<Filter, ApiError> {
    let mut all = vec![primary(p)?];
    while p.keyword("AND") {
        all.push(primary(p)?);
    }
    Ok(if all.len() == 1 { all.remove(0) } else { Filter::All(all) })
}

fn primary(p: &mut Parser) -> Result<Filter, ApiError> {
    if p.sym("(") {
        let inner = filter(p)?;
        if !p.sym(")") {
            return Err(p.unexpected());
        }
        return Ok(inner);
    }
    let field = p.ident()?;
    let test = if p.keyword("LIKE") {
        match p.literal()? {
            Literal::Str(s) => Test::Like(s),
            _ => return Err(malformed("LIKE needs a string")),
        }
    } else if p.keyword("NOT") {
        p.expect_keyword("IN")?;
        Test::In(list(p)?, true)
    } else if p.keyword("IN") {
        Test::In(list(p)?, false)
    } else {
        let op = match p.next() {
            Some(Token::Sym(s)) if ["=", "!=", "<>", "<", "<=", ">", ">="].contains(&s.as_str()) => s,
            _ => {
                p.pos -= 1;
                return Err(p.unexpected());
            }
        };
        Test::Cmp(op, p.literal()?)
    };
    Ok(Filter::Test(Condition { field, test }))
}

fn list(p: &mut Parser) -> Result<Vec<Literal>, ApiError> {
    if !p.sym("(") {
        return Err(p.unexpected());
    }
    let mut items = vec![p.literal()?];
    while p.sym(",") {
        items.push(p.literal()?);
    }
    if !p.sym(")") {
        return Err(p.unexpected());
    }
    Ok(items)
}

fn op_holds(op: &str, ord: Option<Ordering>) -> bool {
    match (op, ord) {
        ("=", Some(o)) => o == Ordering::Equal,
        ("!=" | "<>", Some(o)) => o != Ordering::Equal,
        ("!=" | "<>", None) => true,
        ("<", Some(o)) => o == Ordering::Less,
        ("<=", Some(o)) => o != Ordering::Greater,
        (">", Some(o)) => o == Ordering::Greater,
        (">=", Some(o)) => o != Ordering::Less,
        _ => false,
    }
}

fn is_null(v: &Option<Value>) -> bool {
    matches!(v, None | Some(Value::Null)) || matches!(v, Some(Value::String(s)) if s.is_empty())
}

/// How a stored value compares with a literal; `None` when they cannot be compared (SOQL's null semantics).
fn compare(value: &Option<Value>, lit: &Literal) -> Option<Ordering> {
    if is_null(value) {
        return (lit == &Literal::Null).then_some(Ordering::Equal);
    }
    let v = value.as_ref()?;
    match lit {
        Literal::Null => Some(Ordering::Greater),
        Literal::Bool(b) => v.as_bool().map(|x| x.cmp(b)),
        Literal::Num(n) => {
            let x = v.as_f64().or_else(|| v.as_str().and_then(|s| s.parse().ok()))?;
            x.partial_cmp(n)
        }
        Literal::Str(s) => {
            let x = v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string());
            Some(x.to_lowercase().cmp(&s.to_lowercase()))
        }
        Literal::Temporal(t) => {
            let a = values::parse_datetime(v.as_str()?)?;
            let b = values::parse_datetime(t)?;
            Some(a.cmp(&b))
        }
    }
}

fn like(value: &Option<Value>, pattern: &str) -> bool {
    let Some(text) = value.as_ref().and_then(Value::as_str) else { return false };
    fn matches(t: &[char], p: &[char]) -> bool {
        match p.first() {
            None => t.is_empty(),
            Some('%') => (0..=t.len()).any(|k| matches(&t[k..], &p[1..])),
            Some('_') => !t.is_empty() && matches(&t[1..], &p[1..]),
            Some(c) => t.first().is_some_and(|x| x == c) && matches(&t[1..], &p[1..]),
        }
    }
    let t: Vec<char> = text.to_lowercase().chars().collect();
    let p: Vec<char> = pattern.to_lowercase().chars().collect();
    matches(&t, &p)
}

/// Reads `Field` or `Relationship.Field` of a record.
fn value_at(store: &Store, record: &Record, path: &str) -> Option<Value> {
    match path.split_once('.') {
        None => record.get(path),
        Some((rel, field)) => {
            let lookup = store.model.relationship(record.object, rel)?;
            let parent_id = record.fields.get(&lookup.name)?.as_str()?;
            store.get(parent_id).filter(|p| !p.deleted)?.get(field)
        }
    }
}

/// Checks a field path exists on the object, in Salesforce's words when it does not.
fn check_path(store: &Store, object: usize, path: &str) -> Result<(), ApiError> {
    let model = &store.model;
    let ok = match path.split_once('.') {
        None => SYSTEM_FIELDS.iter().any(|s| s.eq_ignore_ascii_case(path)) || model.field(object, path).is_some(),
        Some((rel, field)) => model.relationship(object, rel).is_some_and(|lookup| {
            let parent = lookup.reference_to.as_deref().and_then(|t| model.object(t));
            parent.is_some_and(|p| {
                SYSTEM_FIELDS.iter().any(|s| s.eq_ignore_ascii_case(field)) || model.field(p.index, field).is_some()
            })
        }),
    };
    if ok {
        return Ok(());
    }
    let name = &model.object_at(object).name;
    Err(ApiError::new(
        400,
        "INVALID_FIELD",
        format!(
            "No such column '{path}' on entity '{name}'. If you are attempting to use a custom field, be sure to append the '__c' after the custom field name. Please reference your WSDL or the describe call for the appropriate names."
        ),
    ))
}

/// The canonical spelling of a field name (`lastname` → `LastName`).
fn canonical(store: &Store, object: usize, name: &str) -> String {
    if let Some(s) = SYSTEM_FIELDS.iter().find(|s| s.eq_ignore_ascii_case(name)) {
        return s.to_string();
    }
    store.model.field(object, name).map(|f| f.name.clone()).unwrap_or_else(|| name.to_string())
}

/// A record as the REST API returns it: `attributes` first, then the fields asked for (all when `fields` is None).
pub fn record_json(store: &Store, version: &str, record: &Record, fields: Option<&[String]>) -> Value {
    let def = store.model.object_at(record.object);
    let mut out = Map::new();
    out.insert("attributes".into(), attributes(version, &def.name, &record.id));
    let all: Vec<String>;
    let fields = match fields {
        Some(f) => f,
        None => {
            all = std::iter::once("Id".to_string())
                .chain(def.fields.iter().map(|f| f.name.clone()))
                .chain(SYSTEM_FIELDS[1..].iter().map(|s| s.to_string()))
                .collect();
            &all
        }
    };
    for path in fields {
        match path.split_once('.') {
            None => {
                out.insert(canonical(store, record.object, path), record.get(path).unwrap_or(Value::Null));
            }
            Some((rel, field)) => {
                let Some(lookup) = store.model.relationship(record.object, rel) else { continue };
                let rel_name = lookup.relationship_name.clone().unwrap_or_default();
                let parent = record
                    .fields
                    .get(&lookup.name)
                    .and_then(Value::as_str)
                    .and_then(|id| store.get(id))
                    .filter(|p| !p.deleted);
                let entry = out.entry(rel_name).or_insert(Value::Null);
                if let Some(p) = parent {
                    if entry.is_null() {
                        let pdef = store.model.object_at(p.object);
                        *entry = json!({"attributes": attributes(version, &pdef.name, &p.id)});
                    }
                    if let Value::Object(m) = entry {
                        m.insert(canonical(store, p.object, field), p.get(field).unwrap_or(Value::Null));
                    }
                }
            }
        }
    }
    Value::Object(out)
}

fn attributes(version: &str, object: &str, id: &str) -> Value {
    json!({"type": object, "url": format!("/services/data/{version}/sobjects/{object}/{id}")})
}

pub struct QueryResult {
    pub total_size: usize,
    pub records: Vec<Value>,
}

/// Runs a query against the store.
pub fn run(store: &Store, version: &str, q: &Query, deleted_too: bool) -> Result<QueryResult, ApiError> {
    let object = store
        .model
        .object(&q.object)
        .ok_or_else(|| ApiError::new(400, "INVALID_TYPE", format!("sObject type '{}' is not supported.", q.object)))?
        .index;
    let conditions = q.filter.as_ref().map(Filter::conditions).unwrap_or_default();
    for path in q.fields.iter().chain(conditions.iter().map(|c| &c.field)).chain(q.order.iter().map(|(f, _)| f)) {
        check_path(store, object, path)?;
    }
    let records: Box<dyn Iterator<Item = &Record>> =
        if deleted_too { Box::new(store.all(object)) } else { Box::new(store.live(object)) };
    let mut rows: Vec<&Record> = records.filter(|r| q.filter.as_ref().is_none_or(|f| f.holds(store, r))).collect();
    if !q.order.is_empty() {
        let field_kind = |path: &str| {
            if path.eq_ignore_ascii_case("id") {
                Some(FieldType::Id)
            } else {
                store.model.field(object, path).map(|f| f.kind)
            }
        };
        rows.sort_by(|a, b| {
            for (path, asc) in &q.order {
                let (va, vb) = (value_at(store, a, path), value_at(store, b, path));
                let ord = match (is_null(&va), is_null(&vb)) {
                    (true, true) => Ordering::Equal,
                    (true, false) => Ordering::Less,
                    (false, true) => Ordering::Greater,
                    _ => order_values(va.as_ref(), vb.as_ref(), field_kind(path)),
                };
                let ord = if *asc { ord } else { ord.reverse() };
                if ord != Ordering::Equal {
                    return ord;
                }
            }
            Ordering::Equal
        });
    }
    let rows: Vec<&Record> = rows.into_iter().skip(q.offset).take(q.limit.unwrap_or(usize::MAX)).collect();
    if q.count {
        return Ok(QueryResult { total_size: rows.len(), records: Vec::new() });
    }
    let records = rows.iter().map(|r| record_json(store, version, r, Some(&q.fields))).collect();
    Ok(QueryResult { total_size: rows.len(), records })
}

fn order_values(a: Option<&Value>, b: Option<&Value>, kind: Option<FieldType>) -> Ordering {
    match (a, b) {
        (Some(Value::Number(x)), Some(Value::Number(y))) => {
            x.as_f64().partial_cmp(&y.as_f64()).unwrap_or(Ordering::Equal)
        }
        (Some(Value::Bool(x)), Some(Value::Bool(y))) => x.cmp(y),
        (Some(Value::String(x)), Some(Value::String(y))) if kind == Some(FieldType::Datetime) => {
            values::parse_datetime(x).cmp(&values::parse_datetime(y))
        }
        (Some(Value::String(x)), Some(Value::String(y))) if kind == Some(FieldType::Id) => x.cmp(y),
        (Some(Value::String(x)), Some(Value::String(y))) => x.to_lowercase().cmp(&y.to_lowercase()),
        _ => Ordering::Equal,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_supported_subset() {
        let q = parse("SELECT Id, LastName, Account.Name FROM Contact WHERE LastName != null AND Email LIKE '%@x.com' AND Id IN ('a', 'b') AND CreatedDate > 2024-01-01T00:00:00Z ORDER BY LastName DESC, Id LIMIT 5 OFFSET 1").expect("parses");
        assert_eq!(q.fields, vec!["Id", "LastName", "Account.Name"]);
        assert_eq!(q.filter.as_ref().map(|f| f.conditions().len()), Some(4));
        assert_eq!(q.order, vec![("LastName".to_string(), false), ("Id".to_string(), true)]);
        assert_eq!((q.limit, q.offset), (Some(5), 1));
        assert!(parse("SELECT COUNT() FROM Account").expect("count").count);
        assert_eq!(parse("SELECT Id FROM").expect_err("incomplete").error_code, "MALFORMED_QUERY");
        // OR and parentheses, AND binding tighter: the keyset condition the read path sends.
        let q = parse("SELECT Id FROM Contact WHERE SystemModstamp >= 2024-01-01T00:00:00Z AND (SystemModstamp > 2024-01-01T00:00:00Z OR Id > '003A') ORDER BY SystemModstamp, Id").expect("keyset");
        assert!(matches!(&q.filter, Some(Filter::All(parts)) if matches!(parts[1], Filter::Any(_))));
        let q = parse("SELECT Id FROM Account WHERE Name = 'x' OR Name = 'y' AND Phone = '1'").expect("OR");
        assert!(matches!(&q.filter, Some(Filter::Any(parts)) if matches!(parts[1], Filter::All(_))));
        assert_eq!(
            parse("SELECT Id FROM Account WHERE (Name = 'x' OR Name = 'y'").expect_err("unclosed").error_code,
            "MALFORMED_QUERY"
        );
    }

    #[test]
    fn like_and_compare_follow_soql() {
        assert!(like(&Some(json!("Hello World")), "hello%"));
        assert!(like(&Some(json!("abc")), "a_c"));
        assert!(!like(&Some(json!("abc")), "a_"));
        assert_eq!(compare(&Some(json!("ABC")), &Literal::Str("abc".into())), Some(Ordering::Equal));
        assert_eq!(compare(&None, &Literal::Null), Some(Ordering::Equal));
        assert_eq!(compare(&Some(json!(5)), &Literal::Num(4.5)), Some(Ordering::Greater));
    }
}

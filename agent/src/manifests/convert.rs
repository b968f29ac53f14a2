//! Documents → typed objects, shared by the YAML and JSON readers.
//!
//! A document is dispatched on `apiVersion`/`kind` and converted into its
//! k8s-openapi type, so a wrong field type is reported with its path
//! (`spec.ports[0].port: ...`). Objects are completed the way the API
//! server would hold them: a namespaced object without a namespace lands
//! in `default`; cluster-wide objects drop any namespace.

use std::path::Path;

use k8s_openapi::Metadata;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use super::error::{Location, ManifestError, Reason};
use super::parse::{ParsedFile, ParsedObject};
use crate::k8s::{Kind, Object};

/// One document or List item on its way to becoming an object.
pub(super) type Unit<'a> = (Location, Result<Source<'a>, Reason>);

pub(super) enum Source<'a> {
    /// An object already read into a generic value (YAML).
    Value(Map<String, Value>),
    /// An object's JSON text, read straight into its type (no generic
    /// value in between: JSON loads stay cheap). `default_kind` is the item
    /// kind of a typed List (`ServiceList`), whose items may omit it.
    Json {
        text: &'a str,
        default_kind: Option<Kind>,
    },
}

/// Units → typed objects, or an error each, in order.
pub(super) fn convert(path: &Path, units: Vec<Unit<'_>>) -> ParsedFile {
    let mut file = ParsedFile::default();
    for (location, unit) in units {
        let object = unit.and_then(|source| match source {
            Source::Value(map) => value_object(map),
            Source::Json { text, default_kind } => json_object(text, default_kind),
        });
        match object {
            Ok(object) => file.objects.push(ParsedObject { object, location }),
            Err(reason) => file.errors.push(ManifestError {
                path: path.to_path_buf(),
                location: Some(location),
                reason,
            }),
        }
    }
    file
}

/// A document's value → units: one object, the items of a `List`, or
/// nothing (an empty document).
pub(super) fn expand_value(value: Value, location: Location, out: &mut Vec<Unit<'_>>) {
    let mut map = match value {
        Value::Null => return,
        Value::Object(map) => map,
        _ => return out.push((location, Err(Reason::NotAnObject))),
    };
    let item_kind = match type_meta(&map) {
        None => return out.push((location, Err(Reason::MissingTypeMeta))),
        Some((api_version, kind)) => list_item_kind(api_version, kind),
    };
    let Some(item_kind) = item_kind else {
        return out.push((location, Ok(Source::Value(map))));
    };
    let items = match map.remove("items") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items,
        Some(_) => return out.push((location, Err(items_not_a_list()))),
    };
    for (i, item) in items.into_iter().enumerate() {
        let location = Location {
            item: Some(i),
            ..location
        };
        let Value::Object(mut item) = item else {
            out.push((location, Err(Reason::NotAnObject)));
            continue;
        };
        if let Some(kind) = item_kind {
            item.entry("apiVersion")
                .or_insert_with(|| kind.api_version().into());
            item.entry("kind").or_insert_with(|| kind.name().into());
        }
        out.push((location, Ok(Source::Value(item))));
    }
}

/// The parts of a JSON object dispatch needs, borrowed from its text.
#[derive(Deserialize)]
struct Peek<'a> {
    #[serde(rename = "apiVersion", borrow, default)]
    api_version: Option<&'a str>,
    #[serde(borrow, default)]
    kind: Option<&'a str>,
    #[serde(borrow, default)]
    items: Option<&'a RawValue>,
}

/// A JSON document's text → units, like [`expand_value`]. Anything
/// unusual (escaped strings in apiVersion/kind, odd types) takes the
/// generic path, so both paths report the same errors.
pub(super) fn expand_json<'a>(text: &'a str, location: Location, out: &mut Vec<Unit<'a>>) {
    match text.trim_start().as_bytes().first() {
        Some(b'{') => {}
        Some(b'n') => return, // null: an empty document
        _ => return out.push((location, Err(Reason::NotAnObject))),
    }
    let Ok(peek) = serde_json::from_str::<Peek<'a>>(text) else {
        return expand_generic(text, location, out);
    };
    let (Some(api_version), Some(kind)) = (peek.api_version, peek.kind) else {
        return expand_generic(text, location, out);
    };
    let Some(item_kind) = list_item_kind(api_version, kind) else {
        let source = Source::Json {
            text,
            default_kind: None,
        };
        return out.push((location, Ok(source)));
    };
    let items: Vec<&'a RawValue> = match peek.items {
        None => Vec::new(),
        Some(raw) => match serde_json::from_str::<Option<Vec<&'a RawValue>>>(raw.get()) {
            Ok(items) => items.unwrap_or_default(),
            Err(_) => return out.push((location, Err(items_not_a_list()))),
        },
    };
    for (i, item) in items.into_iter().enumerate() {
        let location = Location {
            item: Some(i),
            ..location
        };
        let text = item.get();
        if text.starts_with('{') {
            let source = Source::Json {
                text,
                default_kind: item_kind,
            };
            out.push((location, Ok(source)));
        } else {
            out.push((location, Err(Reason::NotAnObject)));
        }
    }
}

fn expand_generic<'a>(text: &'a str, location: Location, out: &mut Vec<Unit<'a>>) {
    match serde_json::from_str::<Value>(text) {
        Ok(value) => expand_value(value, location, out),
        Err(e) => out.push((location, Err(Reason::JsonSyntax(e.to_string())))),
    }
}

fn items_not_a_list() -> Reason {
    Reason::InvalidList("items is not a list".into())
}

fn type_meta(map: &Map<String, Value>) -> Option<(&str, &str)> {
    let api_version = map.get("apiVersion")?.as_str()?;
    let kind = map.get("kind")?.as_str()?;
    Some((api_version, kind))
}

/// `Some(None)` for a generic `v1 List`, `Some(Some(k))` for a typed
/// `<k>List`, `None` when not a list.
fn list_item_kind(api_version: &str, kind: &str) -> Option<Option<Kind>> {
    if api_version == "v1" && kind == "List" {
        return Some(None);
    }
    let item = kind.strip_suffix("List")?;
    Kind::from_type(api_version, item).map(Some)
}

/// The kind a document declares, if the agent reads it.
fn dispatch(api_version: &str, kind: &str) -> Result<Kind, Reason> {
    if list_item_kind(api_version, kind).is_some() {
        return Err(Reason::InvalidList("a List inside a List".into()));
    }
    Kind::from_type(api_version, kind).ok_or_else(|| Reason::UnsupportedKind {
        api_version: api_version.to_string(),
        kind: kind.to_string(),
    })
}

/// One object from its generic form.
fn value_object(map: Map<String, Value>) -> Result<Object, Reason> {
    let (api_version, kind) = type_meta(&map).ok_or(Reason::MissingTypeMeta)?;
    let kind = dispatch(api_version, kind)?;
    let name = match map.get("metadata").and_then(|m| m.get("name")) {
        None | Some(Value::Null) => return Err(Reason::MissingName { kind }),
        Some(Value::String(name)) => name.clone(),
        // Not a string (YAML 1.1 reads `name: y` as a boolean, as
        // Kubernetes does): the typed conversion names the problem.
        Some(_) => String::new(),
    };
    typed_object(kind, &name, Value::Object(map))
}

#[derive(Deserialize)]
struct PeekMeta<'a> {
    #[serde(borrow, default)]
    metadata: Option<PeekName<'a>>,
}

#[derive(Deserialize)]
struct PeekName<'a> {
    #[serde(borrow, default)]
    name: Option<&'a str>,
}

/// One object from its JSON text.
fn json_object(text: &str, default_kind: Option<Kind>) -> Result<Object, Reason> {
    let fallback = || match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(mut map)) => {
            if let Some(kind) = default_kind {
                map.entry("apiVersion")
                    .or_insert_with(|| kind.api_version().into());
                map.entry("kind").or_insert_with(|| kind.name().into());
            }
            value_object(map)
        }
        Ok(_) => Err(Reason::NotAnObject),
        Err(e) => Err(Reason::JsonSyntax(e.to_string())),
    };
    let (Ok(peek), Ok(meta)) = (
        serde_json::from_str::<Peek<'_>>(text),
        serde_json::from_str::<PeekMeta<'_>>(text),
    ) else {
        return fallback();
    };
    let kind = match (peek.api_version, peek.kind, default_kind) {
        (Some(api_version), Some(kind), _) => dispatch(api_version, kind)?,
        (None, None, Some(kind)) => kind,
        // One of the two given in a typed List, or neither elsewhere.
        _ => return fallback(),
    };
    let name = meta
        .metadata
        .and_then(|m| m.name)
        .unwrap_or_default()
        .to_string();
    typed_object(kind, &name, JsonText(text))
}

/// Where a typed object is read from.
trait Input {
    fn read<T: DeserializeOwned>(self) -> Result<T, serde_path_to_error::Error<serde_json::Error>>;
}

impl Input for Value {
    fn read<T: DeserializeOwned>(self) -> Result<T, serde_path_to_error::Error<serde_json::Error>> {
        serde_path_to_error::deserialize(self)
    }
}

struct JsonText<'a>(&'a str);

impl Input for JsonText<'_> {
    fn read<T: DeserializeOwned>(self) -> Result<T, serde_path_to_error::Error<serde_json::Error>> {
        let mut deserializer = serde_json::Deserializer::from_str(self.0);
        serde_path_to_error::deserialize(&mut deserializer)
    }
}

/// The typed object of `kind`, which must have a name.
fn typed_object(kind: Kind, name: &str, input: impl Input) -> Result<Object, Reason> {
    let object = match kind {
        Kind::Namespace => Object::from(typed::<Namespace>(input, kind, name)?),
        Kind::Node => Object::from(typed::<Node>(input, kind, name)?),
        Kind::Pod => Object::from(typed::<Pod>(input, kind, name)?),
        Kind::Service => Object::from(typed::<Service>(input, kind, name)?),
        Kind::EndpointSlice => Object::from(typed::<EndpointSlice>(input, kind, name)?),
        Kind::NetworkPolicy => Object::from(typed::<NetworkPolicy>(input, kind, name)?),
    };
    match object.metadata().name.as_deref() {
        None | Some("") => Err(Reason::MissingName { kind }),
        Some(_) => Ok(object),
    }
}

/// The typed object, with its namespace completed as the API server would.
fn typed<T>(input: impl Input, kind: Kind, name: &str) -> Result<T, Reason>
where
    T: DeserializeOwned + Metadata<Ty = ObjectMeta>,
{
    let mut object: T = input.read().map_err(|e| {
        let path = e.path().to_string();
        let inner = e.inner().to_string();
        // serde_json counts lines within the object's own text; the
        // error's location already names the document.
        let inner = without_json_position(&inner);
        let message = if path == "." {
            inner.to_string()
        } else {
            format!("{path}: {inner}")
        };
        Reason::Invalid {
            kind,
            name: name.to_string(),
            message,
        }
    })?;
    let meta = object.metadata_mut();
    if kind.namespaced() {
        if meta.namespace.as_deref().unwrap_or_default().is_empty() {
            meta.namespace = Some("default".into());
        }
    } else {
        meta.namespace = None;
    }
    Ok(object)
}

/// `"... at line 3 column 7"` → `"..."`.
fn without_json_position(message: &str) -> &str {
    let Some(at) = message.rfind(" at line ") else {
        return message;
    };
    let tail = &message[at + " at line ".len()..];
    let is_position = tail.split_once(" column ").is_some_and(|(l, c)| {
        !l.is_empty() && !c.is_empty() && (l.to_string() + c).bytes().all(|b| b.is_ascii_digit())
    });
    if is_position { &message[..at] } else { message }
}

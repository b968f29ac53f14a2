//! Manifest text → objects, pure: no I/O, no panics on any input.
//!
//! Each document is first read into a generic JSON value, then dispatched
//! on `apiVersion`/`kind` and converted into its k8s-openapi type, so a
//! wrong field type is reported with its path (`spec.ports[0].port: ...`).
//! Objects are completed the way the API server would hold them: a
//! namespaced object without a namespace lands in `default`; cluster-wide
//! objects drop any namespace.

use std::path::Path;

use k8s_openapi::Metadata;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use super::error::{Location, ManifestError, Reason};
use super::split::split_documents;
use crate::k8s::{Kind, Object};

/// An object and the document it came from.
#[derive(Clone, Debug, PartialEq)]
pub struct ParsedObject {
    pub object: Object,
    pub location: Location,
}

/// Everything one file holds: the objects of its good documents and one
/// error per bad one.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ParsedFile {
    pub objects: Vec<ParsedObject>,
    pub errors: Vec<ManifestError>,
    /// Non-empty documents seen (good and bad).
    pub documents: usize,
}

/// The file kinds the loader reads, by extension.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Yaml,
    Json,
}

impl Format {
    /// `*.yaml`, `*.yml` → YAML; `*.json` → JSON (any case); else `None`.
    pub fn of(path: &Path) -> Option<Format> {
        let ext = path.extension()?.to_str()?.to_ascii_lowercase();
        match ext.as_str() {
            "yaml" | "yml" => Some(Format::Yaml),
            "json" => Some(Format::Json),
            _ => None,
        }
    }
}

/// Parses a file's bytes by its extension's format (YAML when unknown).
pub fn parse_file(path: &Path, bytes: &[u8]) -> ParsedFile {
    // A UTF-8 byte order mark is allowed, as kubectl allows it.
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let Ok(text) = std::str::from_utf8(bytes) else {
        return ParsedFile {
            errors: vec![ManifestError {
                path: path.to_path_buf(),
                location: None,
                reason: Reason::NotUtf8,
            }],
            ..ParsedFile::default()
        };
    };
    match Format::of(path) {
        Some(Format::Json) => parse_json(path, text),
        _ => parse_yaml(path, text),
    }
}

/// YAML: documents separated by `---` lines, each parsed on its own.
pub fn parse_yaml(path: &Path, text: &str) -> ParsedFile {
    let mut file = FileBuilder::new(path);
    for doc in split_documents(text) {
        let location = Location {
            document: doc.index,
            item: None,
            line: Some(doc.line),
        };
        file.parsed.documents += 1;
        if let Some(separator) = doc.bad_separator {
            file.error(
                location,
                Reason::YamlSyntax(format!(
                    "invalid document separator: only a comment may follow \"---\", found {separator:?}"
                )),
            );
            continue;
        }
        match yaml_value(doc.text, doc.line) {
            Ok(value) => file.value(value, location),
            Err(reason) => file.error(location, reason),
        }
    }
    file.parsed
}

/// JSON: one value, or a stream of values; `List`s are flattened.
pub fn parse_json(path: &Path, text: &str) -> ParsedFile {
    let mut file = FileBuilder::new(path);
    let mut stream = serde_json::Deserializer::from_str(text).into_iter::<Value>();
    let mut index = 0;
    loop {
        let start = stream.byte_offset();
        let Some(next) = stream.next() else { break };
        let line = line_of(text, start);
        let location = Location {
            document: index,
            item: None,
            line: Some(line),
        };
        file.parsed.documents += 1;
        match next {
            Ok(value) => file.value(value, location),
            Err(e) => {
                file.error(location, Reason::JsonSyntax(e.to_string()));
                break;
            }
        }
        index += 1;
    }
    file.parsed
}

/// 1-based line of the first non-blank character at or after `offset`.
fn line_of(text: &str, offset: usize) -> usize {
    let rest = text.get(offset..).unwrap_or_default();
    let skipped = rest.len() - rest.trim_start().len();
    let end = (offset + skipped).min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// One YAML document into a JSON value (`Null` for an empty document).
fn yaml_value(text: &str, first_line: usize) -> Result<Value, Reason> {
    let mut options = serde_saphyr::Options::default();
    // One-line messages for logs; the location is rendered below with the
    // line numbered within the whole file.
    options.with_snippet = false;
    serde_saphyr::from_str_with_options::<Value>(text, options).map_err(|e| {
        let message = e.to_string();
        match e.location() {
            Some(at) => {
                let line = first_line as u64 + at.line().saturating_sub(1);
                Reason::YamlSyntax(format!(
                    "{} (file line {line}, column {})",
                    strip_location(&message),
                    at.column()
                ))
            }
            None => Reason::YamlSyntax(message),
        }
    })
}

/// serde-saphyr appends " at line L, column C" (document-relative);
/// drop it in favour of the file-relative one.
fn strip_location(message: &str) -> &str {
    match message.rfind(" at line ") {
        Some(i) => &message[..i],
        None => message,
    }
}

/// Collects one file's objects and errors.
struct FileBuilder<'a> {
    path: &'a Path,
    parsed: ParsedFile,
}

impl<'a> FileBuilder<'a> {
    fn new(path: &'a Path) -> Self {
        Self {
            path,
            parsed: ParsedFile::default(),
        }
    }

    fn error(&mut self, location: Location, reason: Reason) {
        self.parsed.errors.push(ManifestError {
            path: self.path.to_path_buf(),
            location: Some(location),
            reason,
        });
    }

    /// A document's value: an object, a `List` of objects, or nothing.
    fn value(&mut self, value: Value, location: Location) {
        let map = match value {
            Value::Null => return,
            Value::Object(map) => map,
            _ => return self.error(location, Reason::NotAnObject),
        };
        let (api_version, kind) = match type_meta(&map) {
            Some((a, k)) => (a.to_string(), k.to_string()),
            None => return self.error(location, Reason::MissingTypeMeta),
        };
        match list_item_kind(&api_version, &kind) {
            Some(item_kind) => self.list(map, item_kind, location),
            None => match object(map) {
                Ok(object) => self.parsed.objects.push(ParsedObject { object, location }),
                Err(reason) => self.error(location, reason),
            },
        }
    }

    /// `kind: List` (any items) or `kind: <Kind>List` (items of that kind,
    /// whose apiVersion/kind may be omitted, as the API returns them).
    fn list(&mut self, mut map: Map<String, Value>, item_kind: Option<Kind>, location: Location) {
        let items = match map.remove("items") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(items)) => items,
            Some(_) => {
                let reason = Reason::InvalidList("items is not a list".into());
                return self.error(location, reason);
            }
        };
        for (i, item) in items.into_iter().enumerate() {
            let location = Location {
                item: Some(i),
                ..location
            };
            let Value::Object(mut item) = item else {
                self.error(location, Reason::NotAnObject);
                continue;
            };
            if let Some(kind) = item_kind {
                item.entry("apiVersion")
                    .or_insert_with(|| kind.api_version().into());
                item.entry("kind").or_insert_with(|| kind.name().into());
            }
            let nested = type_meta(&item).is_some_and(|(a, k)| list_item_kind(a, k).is_some());
            let result = if nested {
                Err(Reason::InvalidList("a List inside a List".into()))
            } else {
                object(item)
            };
            match result {
                Ok(object) => self.parsed.objects.push(ParsedObject { object, location }),
                Err(reason) => self.error(location, reason),
            }
        }
    }
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

/// One object from its JSON form.
fn object(map: Map<String, Value>) -> Result<Object, Reason> {
    let (api_version, kind_name) = type_meta(&map).ok_or(Reason::MissingTypeMeta)?;
    let kind = Kind::from_type(api_version, kind_name).ok_or_else(|| Reason::UnsupportedKind {
        api_version: api_version.to_string(),
        kind: kind_name.to_string(),
    })?;
    let name = map
        .get("metadata")
        .and_then(|m| m.get("name"))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    if name.is_empty() {
        return Err(Reason::MissingName { kind });
    }
    let value = Value::Object(map);
    Ok(match kind {
        Kind::Namespace => Object::from(typed::<k8s_openapi::api::core::v1::Namespace>(
            value, kind, &name,
        )?),
        Kind::Node => Object::from(typed::<k8s_openapi::api::core::v1::Node>(
            value, kind, &name,
        )?),
        Kind::Pod => Object::from(typed::<k8s_openapi::api::core::v1::Pod>(
            value, kind, &name,
        )?),
        Kind::Service => Object::from(typed::<k8s_openapi::api::core::v1::Service>(
            value, kind, &name,
        )?),
        Kind::EndpointSlice => Object::from(
            typed::<k8s_openapi::api::discovery::v1::EndpointSlice>(value, kind, &name)?,
        ),
        Kind::NetworkPolicy => Object::from(typed::<
            k8s_openapi::api::networking::v1::NetworkPolicy,
        >(value, kind, &name)?),
    })
}

/// The typed object, with its namespace completed as the API server would.
fn typed<T>(value: Value, kind: Kind, name: &str) -> Result<T, Reason>
where
    T: DeserializeOwned + Metadata<Ty = ObjectMeta>,
{
    let mut object: T = serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let message = if path == "." {
            e.inner().to_string()
        } else {
            format!("{path}: {}", e.inner())
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

//! Manifest text → objects, pure: no I/O, no panics on any input.
//!
//! YAML documents are read into a generic value first; JSON is read
//! straight into the typed objects. Either way [`super::convert`]
//! dispatches on `apiVersion`/`kind` and reports bad documents.

use std::path::Path;

use serde_json::Value;
use serde_json::value::RawValue;

use super::convert::{Unit, convert, expand_json, expand_value};
use super::error::{Location, ManifestError, Reason};
use super::split::split_documents;
use crate::k8s::Object;

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
    let documents = split_documents(text);
    let count = documents.len();
    let mut file = in_parallel(path, documents, |docs| {
        let mut units = Vec::new();
        for doc in docs {
            let location = Location {
                document: doc.index,
                item: None,
                line: Some(doc.line),
            };
            match (doc.bad_separator, yaml_value(doc.text, doc.line)) {
                (Some(separator), _) => units.push((
                    location,
                    Err(Reason::YamlSyntax(format!(
                        "invalid document separator: only a comment may follow \"---\", found {separator:?}"
                    ))),
                )),
                (None, Ok(value)) => expand_value(value, location, &mut units),
                (None, Err(reason)) => units.push((location, Err(reason))),
            }
        }
        convert(path, units)
    });
    file.documents = count;
    file
}

/// JSON: one value, or a stream of values; `List`s are flattened.
pub fn parse_json(path: &Path, text: &str) -> ParsedFile {
    let mut units: Vec<Unit<'_>> = Vec::new();
    let mut stream = serde_json::Deserializer::from_str(text).into_iter::<&RawValue>();
    let mut lines = LineCounter::new(text);
    let mut documents = 0;
    loop {
        let start = stream.byte_offset();
        let Some(next) = stream.next() else { break };
        let location = Location {
            document: documents,
            item: None,
            line: Some(lines.line_at(start)),
        };
        documents += 1;
        match next {
            Ok(raw) => expand_json(raw.get(), location, &mut units),
            Err(e) => {
                units.push((location, Err(Reason::JsonSyntax(e.to_string()))));
                break;
            }
        }
    }
    // Delimiting JSON is cheap; converting into typed objects is the cost.
    let mut file = in_parallel(path, units, |units| convert(path, units));
    file.documents = documents;
    file
}

/// Line numbers for increasing byte offsets, in one pass over the text.
struct LineCounter<'a> {
    text: &'a str,
    offset: usize,
    line: usize,
}

impl<'a> LineCounter<'a> {
    fn new(text: &'a str) -> Self {
        Self {
            text,
            offset: 0,
            line: 1,
        }
    }

    /// 1-based line of the first non-blank character at or after `offset`.
    fn line_at(&mut self, offset: usize) -> usize {
        let rest = self.text.get(offset..).unwrap_or_default();
        let target = (offset + (rest.len() - rest.trim_start().len())).min(self.text.len());
        if target > self.offset {
            let skipped = &self.text.as_bytes()[self.offset..target];
            self.line += skipped.iter().filter(|&&b| b == b'\n').count();
            self.offset = target;
        }
        self.line
    }
}

/// Files with fewer units are handled on the calling thread.
const PARALLEL_UNITS: usize = 256;
const MAX_THREADS: usize = 8;

/// Runs `work` over chunks of `items` on several threads when there are
/// many, and concatenates the results in order: the same outcome as one
/// sequential pass (loading 100k objects is CPU-bound).
fn in_parallel<T: Send>(
    path: &Path,
    items: Vec<T>,
    work: impl Fn(Vec<T>) -> ParsedFile + Sync,
) -> ParsedFile {
    // Checked first: available_parallelism reads cgroup files, which costs
    // more than parsing a small file.
    if items.len() < PARALLEL_UNITS {
        return work(items);
    }
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get().min(MAX_THREADS));
    if threads < 2 {
        return work(items);
    }
    let chunk_len = items.len().div_ceil(threads);
    let mut chunks: Vec<Vec<T>> = Vec::with_capacity(threads);
    let mut items = items.into_iter();
    loop {
        let chunk: Vec<T> = items.by_ref().take(chunk_len).collect();
        if chunk.is_empty() {
            break;
        }
        chunks.push(chunk);
    }
    let work = &work;
    let parts: Vec<ParsedFile> = std::thread::scope(|scope| {
        let workers: Vec<_> = chunks
            .into_iter()
            .map(|chunk| scope.spawn(move || work(chunk)))
            .collect();
        workers
            .into_iter()
            // The parsers are panic-free (and proptested); should one panic
            // anyway, the file says so instead of losing objects silently.
            .map(|worker| worker.join().unwrap_or_else(|_| worker_failed(path)))
            .collect()
    });
    let mut file = ParsedFile::default();
    for part in parts {
        file.objects.extend(part.objects);
        file.errors.extend(part.errors);
    }
    file
}

fn worker_failed(path: &Path) -> ParsedFile {
    ParsedFile {
        errors: vec![ManifestError {
            path: path.to_path_buf(),
            location: None,
            reason: Reason::Read("internal error: the parser failed on part of this file".into()),
        }],
        ..ParsedFile::default()
    }
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

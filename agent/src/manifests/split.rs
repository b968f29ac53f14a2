//! Splitting a YAML file into documents before parsing, as kubectl's YAML
//! reader does, so a syntax error in one document cannot take the others
//! with it.

/// One document's text and where it starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawDocument<'a> {
    /// 0-based, counting the non-blank documents of the file.
    pub index: usize,
    /// 1-based line of the document's first line.
    pub line: usize,
    pub text: &'a str,
    /// The `---` line that started this document carried content other
    /// than a comment (kubectl rejects that as an invalid separator).
    pub bad_separator: Option<&'a str>,
}

/// Splits at lines starting with `---`. What follows `---` on the line
/// must be blank or a comment; anything else marks the document it starts
/// as bad (kubectl: "invalid Yaml document separator"). Documents that are
/// only whitespace are dropped and not counted.
pub fn split_documents<'a>(text: &'a str) -> Vec<RawDocument<'a>> {
    let mut documents = Vec::new();
    let mut start = 0; // byte offset of the current document
    let mut start_line = 1;
    let mut bad = None; // the current document's bad separator
    let mut offset = 0;
    let push = |documents: &mut Vec<RawDocument<'a>>,
                end: usize,
                start: usize,
                line: usize,
                bad: Option<&'a str>| {
        let body = &text[start..end];
        if !body.trim().is_empty() || bad.is_some() {
            documents.push(RawDocument {
                index: documents.len(),
                line,
                text: body,
                bad_separator: bad,
            });
        }
    };
    for (line_number, line) in (1..).zip(text.split_inclusive('\n')) {
        let content = line.trim_end_matches(['\n', '\r']);
        if let Some(rest) = content.strip_prefix("---") {
            push(&mut documents, offset, start, start_line, bad);
            let trailing = rest.trim();
            bad = (!trailing.is_empty() && !trailing.starts_with('#')).then_some(trailing);
            start = offset + line.len();
            start_line = line_number + 1;
        }
        offset += line.len();
    }
    push(&mut documents, text.len(), start, start_line, bad);
    documents
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(docs: &[RawDocument<'_>]) -> Vec<(usize, usize, String)> {
        docs.iter()
            .map(|d| (d.index, d.line, d.text.trim().to_string()))
            .collect()
    }

    #[test]
    fn splits_at_separator_lines_and_numbers_lines() {
        let text = "---\na: 1\n---\n\n---  # comment\nb: 2\nc: 3\n---\r\nd: 4";
        let docs = split_documents(text);
        assert_eq!(
            texts(&docs),
            vec![
                (0, 2, "a: 1".to_string()),
                (1, 6, "b: 2\nc: 3".to_string()),
                (2, 9, "d: 4".to_string()),
            ]
        );
        assert!(docs.iter().all(|d| d.bad_separator.is_none()));
    }

    #[test]
    fn separators_must_start_the_line_and_carry_nothing_else() {
        let text = "a: |\n  ---\n  x\n--- !tag\nb: 1\n";
        let docs = split_documents(text);
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[0].text, "a: |\n  ---\n  x\n");
        assert_eq!(docs[0].bad_separator, None);
        assert_eq!(docs[1].bad_separator, Some("!tag"));
        assert_eq!(docs[1].line, 5);
    }

    #[test]
    fn empty_input_has_no_documents() {
        assert!(split_documents("").is_empty());
        assert!(split_documents("---\n---\n  \n").is_empty());
        assert_eq!(split_documents("# only a comment\n").len(), 1);
    }
}

//! The README's configuration tables against the config's one definition of each key
//! (`proxy-core/src/config/file.rs`): every section's table lists exactly its keys, and each
//! key's default is the one its doc comment names, rendered from the constant the compiler
//! uses. A key added, renamed or given a new default without the README fails here.

use std::collections::BTreeMap;
use std::path::Path;

/// One key as `file.rs` defines it.
#[derive(Debug)]
struct KeyDoc {
    name: String,
    /// What the README's default column must say.
    default: String,
}

fn repo_file(path: &str) -> String {
    let full = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("read {}: {e}", full.display()))
}

/// `#[doc = "..."]` lines of an item, joined.
fn doc_text(attrs: &[syn::Attribute]) -> String {
    let lines: Vec<String> = attrs
        .iter()
        .filter(|a| a.path().is_ident("doc"))
        .filter_map(|a| match &a.meta {
            syn::Meta::NameValue(nv) => match &nv.value {
                syn::Expr::Lit(syn::ExprLit {
                    lit: syn::Lit::Str(s),
                    ..
                }) => Some(s.value().trim().to_string()),
                _ => None,
            },
            _ => None,
        })
        .collect();
    lines.join(" ")
}

/// The name serde reads a field under (`#[serde(rename = "...")]`), and whether the field
/// is flattened (a plugin's own options, which have no row).
fn serde_name(field: &syn::Field) -> (String, bool) {
    let mut name = field.ident.as_ref().expect("named field").to_string();
    let mut flatten = false;
    for attr in field.attrs.iter().filter(|a| a.path().is_ident("serde")) {
        let _ = attr.parse_nested_meta(|meta| {
            if meta.path.is_ident("rename") {
                let value: syn::LitStr = meta.value()?.parse()?;
                name = value.value();
            } else if meta.path.is_ident("flatten") {
                flatten = true;
            }
            Ok(())
        });
    }
    (name, flatten)
}

/// A constant's value in config syntax, as the README writes it.
fn render(expr: &syn::Expr) -> String {
    match expr {
        syn::Expr::Lit(lit) => match &lit.lit {
            syn::Lit::Str(s) => format!("{:?}", s.value()),
            syn::Lit::Int(i) => i.base10_digits().to_string(),
            syn::Lit::Bool(b) => b.value.to_string(),
            _ => panic!("a default in file.rs is a literal of a kind this test cannot render"),
        },
        syn::Expr::Reference(r) => render(&r.expr),
        syn::Expr::Array(a) if a.elems.iter().all(|e| matches!(e, syn::Expr::Tuple(_))) => {
            let pairs: Vec<String> = a
                .elems
                .iter()
                .map(|e| match e {
                    syn::Expr::Tuple(t) => {
                        format!("{} = {}", render(&t.elems[0]), render(&t.elems[1]))
                    }
                    _ => unreachable!(),
                })
                .collect();
            format!("{{ {} }}", pairs.join(", "))
        }
        syn::Expr::Array(a) => {
            let items: Vec<String> = a.elems.iter().map(render).collect();
            format!("[{}]", items.join(", "))
        }
        _ => panic!("a default in file.rs is an expression this test cannot render"),
    }
}

/// Every section of `file.rs` (by the header its doc comment starts with) and its keys.
fn sections_in_source() -> BTreeMap<String, Vec<KeyDoc>> {
    let file = syn::parse_file(&repo_file("src/config/file.rs")).expect("file.rs parses");
    let consts: BTreeMap<String, String> = file
        .items
        .iter()
        .filter_map(|item| match item {
            syn::Item::Const(c) => Some((c.ident.to_string(), render(&c.expr))),
            _ => None,
        })
        .collect();
    let mut sections = BTreeMap::new();
    for item in &file.items {
        let syn::Item::Struct(s) = item else { continue };
        let doc = doc_text(&s.attrs);
        let Some(header) = doc.strip_prefix('`').and_then(|d| d.split('`').next()) else {
            continue; // the whole file, not a section
        };
        let mut keys = Vec::new();
        for field in &s.fields {
            let (name, flatten) = serde_name(field);
            if flatten {
                continue;
            }
            let doc = doc_text(&field.attrs);
            let default = if doc.ends_with("Required.") {
                "required".to_string()
            } else {
                let text = doc
                    .rsplit_once("Default: ")
                    .unwrap_or_else(|| {
                        panic!("{header} `{name}`: doc says no `Default: ...` or `Required.`")
                    })
                    .1
                    .trim_end_matches('.');
                match text.strip_prefix("[`").and_then(|t| t.strip_suffix("`]")) {
                    Some(constant) => consts
                        .get(constant)
                        .unwrap_or_else(|| panic!("{header} `{name}`: no constant {constant}"))
                        .clone(),
                    None => strip_code(text).to_string(),
                }
            };
            keys.push(KeyDoc { name, default });
        }
        sections.insert(header.to_string(), keys);
    }
    sections
}

/// Every table under a `#### `HEADER`` heading of the README's key reference: key -> default.
fn sections_in_readme() -> BTreeMap<String, BTreeMap<String, String>> {
    let readme = repo_file("../README.md");
    let mut sections = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in readme.lines() {
        if let Some(heading) = line.strip_prefix("#### `") {
            current = heading.strip_suffix('`').map(str::to_string);
            if let Some(header) = &current {
                sections.insert(header.clone(), BTreeMap::new());
            }
            continue;
        }
        if line.starts_with('#') {
            current = None;
            continue;
        }
        let Some(header) = &current else { continue };
        let cells: Vec<&str> = line
            .split(" | ")
            .map(|c| c.trim_matches(|ch| ch == '|' || ch == ' '))
            .collect();
        let Some(key) = cells
            .first()
            .and_then(|c| c.strip_prefix('`'))
            .and_then(|c| c.strip_suffix('`'))
        else {
            continue; // the table's header row and rule
        };
        let default = strip_code(cells.get(1).copied().unwrap_or_default());
        sections
            .get_mut(header)
            .expect("section")
            .insert(key.to_string(), default.to_string());
    }
    sections
}

/// `text` without the backticks around it, if it is one code span.
fn strip_code(text: &str) -> &str {
    text.strip_prefix('`')
        .and_then(|t| t.strip_suffix('`'))
        .filter(|t| !t.contains('`'))
        .unwrap_or(text)
}

#[test]
fn every_section_of_the_config_has_a_readme_table_with_its_keys_and_defaults() {
    let source = sections_in_source();
    let readme = sections_in_readme();
    assert!(source.len() >= 15, "found only {:?}", source.keys());
    let mut problems = Vec::new();
    for (header, keys) in &source {
        let Some(table) = readme.get(header) else {
            problems.push(format!("README has no table under #### `{header}`"));
            continue;
        };
        for key in keys {
            match table.get(&key.name) {
                None => problems.push(format!("{header}: README has no row for `{}`", key.name)),
                Some(default) if *default != key.default => problems.push(format!(
                    "{header} `{}`: README says default `{default}`, file.rs says `{}`",
                    key.name, key.default
                )),
                Some(_) => {}
            }
        }
        for name in table.keys() {
            if !keys.iter().any(|k| &k.name == name) {
                problems.push(format!(
                    "{header}: README row `{name}` is no key of the config"
                ));
            }
        }
    }
    for header in readme.keys() {
        if !source.contains_key(header) {
            problems.push(format!(
                "README table #### `{header}` is no section of the config"
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

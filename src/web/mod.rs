//! The embedded single-page web UI served at `GET /`.
//!
//! One self-contained HTML file (inline CSS and vanilla JS, no CDN, no web fonts) that uploads an
//! image by file picker, drag-and-drop or paste and shows the top-3 classes from `POST classify`.
//! It speaks English and Simplified Chinese: the browser's preferred language (`navigator.languages`,
//! what it sends as `Accept-Language`) picks one, a 中文 / English switch overrides it and is
//! remembered in `localStorage`. It asks the API for `lang=zh`, so every class comes with both
//! names and a switch redraws the answer without asking again. It addresses the API relative to its own URL, so it also works when an FC HTTP trigger or a
//! custom domain puts the function under a base path (`x-fc-base-path`). Nothing here knows about
//! the model or the FC adapter; the server only needs the two constants below.

/// The page, compiled into the binary (about 26 KB).
pub const INDEX_HTML: &str = include_str!("index.html");

/// `Content-Type` to serve [`INDEX_HTML`] with.
pub const INDEX_CONTENT_TYPE: &str = "text/html; charset=utf-8";

/// `Cache-Control` for [`INDEX_HTML`]: revalidate, so a redeployed function's page is seen at once.
pub const INDEX_CACHE_CONTROL: &str = "no-cache";

#[cfg(test)]
mod tests {
    use super::*;

    /// Values of every `attr="..."` in the page.
    fn attribute_values<'a>(html: &'a str, attr: &str) -> Vec<&'a str> {
        let needle = format!("{attr}=\"");
        html.match_indices(&needle)
            .filter_map(|(at, _)| {
                let rest = &html[at + needle.len()..];
                rest.find('"').map(|end| &rest[..end])
            })
            .collect()
    }

    #[test]
    fn page_loads_nothing_from_other_origins() {
        for attr in ["src", "href", "action"] {
            for value in attribute_values(INDEX_HTML, attr) {
                assert!(
                    !value.contains("//"),
                    "{attr}=\"{value}\" points to another origin; the page must work offline"
                );
            }
        }
        assert!(!INDEX_HTML.contains("@import"), "no imported stylesheets");
        // Without an inline icon every page view also requests /favicon.ico: one more billed
        // invocation answered with a 404.
        assert!(
            INDEX_HTML.contains("<link rel=\"icon\" href=\"data:,\">"),
            "no inline favicon"
        );
        assert!(!INDEX_HTML.contains("@font-face"), "no web fonts");
    }

    #[test]
    fn page_addresses_the_api_relative_to_itself() {
        assert!(
            INDEX_HTML.contains("new URL(\"classify\""),
            "the API URL must be resolved relative to the page"
        );
        for absolute in ["\"/classify", "'/classify", "`/classify"] {
            assert!(
                !INDEX_HTML.contains(absolute),
                "found {absolute}: an absolute path breaks under an FC base path"
            );
        }
    }

    #[test]
    fn page_has_the_hooks_the_browser_test_reads() {
        for id in [
            "data-testid=\"file-input\"",
            "data-testid=\"predictions\"",
            "\"prediction\"",
            "data-testid=\"error-message\"",
            "data-testid=\"lang-zh\"",
            "data-testid=\"lang-en\"",
            "aria-live=\"polite\"",
            "role=\"alert\"",
            "name=\"viewport\"",
        ] {
            assert!(INDEX_HTML.contains(id), "page lacks {id}");
        }
    }

    #[test]
    fn page_asks_for_both_names_and_has_both_languages() {
        assert!(INDEX_HTML.contains("searchParams.set(\"lang\", \"zh\")"));
        for text in [
            "AI 万物识别",
            "上传图片",
            "开始识别",
            "识别结果",
            "中文",
            "English",
        ] {
            assert!(INDEX_HTML.contains(text), "page lacks {text}");
        }
        assert!(
            INDEX_HTML.contains("localStorage"),
            "the choice is not remembered"
        );
    }

    #[test]
    fn file_input_has_a_label() {
        assert!(INDEX_HTML.contains("<input id=\"file\""));
        assert!(INDEX_HTML.contains("<label id=\"pick-label\" for=\"file\""));
    }
}

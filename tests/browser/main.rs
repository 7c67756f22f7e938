//! The web page in a real headless Chromium, driven over W3C WebDriver by chromedriver, against
//! the real `resnet18-fc serve` binary (synthetic weights) on an ephemeral loopback port.
//! Browsers prefer English (`en-US,en`) unless a test asks for Chinese (`zh-CN,zh`).
//!
//! Needs Debian's `chromium` and `chromium-driver` (run `.ci/install-browser.sh`). Without them
//! these tests fail and say so; `RESNET18_FC_SKIP_BROWSER=1` skips them explicitly. Set
//! `RESNET18_FC_SCREENSHOT_DIR=<dir>` to save PNG screenshots of the page for a look at the layout.

mod harness;
#[path = "../support/mod.rs"]
mod support;
mod webdriver;

use crate::support::ResponseExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use harness::{Server, start_server, start_under_base_path};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use webdriver::{Driver, Session, TAB, Viewport, find_tools};

const DESKTOP: Viewport = Viewport::Desktop {
    width: 1280,
    height: 900,
};
/// An iPhone X-class phone: 375 CSS px wide.
const PHONE_WIDTH: u32 = 375;
const PHONE: Viewport = Viewport::Phone {
    width: PHONE_WIDTH,
    height: 812,
};
/// What an English-speaking user's browser sends as Accept-Language.
const ENGLISH: &str = "en-US,en";
/// What a Chinese-speaking user's browser sends as Accept-Language.
const CHINESE: &str = "zh-CN,zh;q=0.9,en;q=0.8";
/// How long the page may take to show an answer. A failure bound, not a performance check.
const ANSWER_DEADLINE: Duration = Duration::from_secs(60);

/// One browser at a time: the machine has two cores and each test starts its own Chromium.
static BROWSER_LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// What every test needs: chromedriver, a browser session, and image files to upload.
struct Browser {
    session: Option<Session>,
    dir: tempfile::TempDir,
    _driver: Driver,
    _lock: tokio::sync::MutexGuard<'static, ()>,
}

impl Browser {
    /// Starts chromedriver and a headless Chromium with `viewport` whose user prefers English;
    /// `None` only when the tests are skipped explicitly with `RESNET18_FC_SKIP_BROWSER=1`.
    async fn start(viewport: Viewport) -> Option<Self> {
        Self::start_in(viewport, ENGLISH).await
    }

    /// Like [`Browser::start`], for a user whose browser prefers `accept_languages`.
    async fn start_in(viewport: Viewport, accept_languages: &str) -> Option<Self> {
        if std::env::var("RESNET18_FC_SKIP_BROWSER").as_deref() == Ok("1") {
            eprintln!("RESNET18_FC_SKIP_BROWSER=1: browser test skipped on request");
            return None;
        }
        let (chromedriver, chromium) = find_tools().unwrap_or_else(|missing| {
            panic!(
                "{missing} not found. Run `.ci/install-browser.sh` (installs Debian's chromium and \
                 chromium-driver), or point CHROMEDRIVER / CHROME_BIN at them. To skip the browser \
                 tests deliberately, set RESNET18_FC_SKIP_BROWSER=1."
            )
        });
        let lock = BROWSER_LOCK.lock().await;
        let dir = tempfile::tempdir().expect("temp dir");
        let profile = dir.path().join("profile");
        let driver = Driver::start(&chromedriver).expect("start chromedriver");
        let session = driver
            .session(&chromium, &profile, viewport, accept_languages)
            .await
            .expect("open a headless Chromium session");
        Some(Self {
            session: Some(session),
            dir,
            _driver: driver,
            _lock: lock,
        })
    }

    fn s(&self) -> &Session {
        self.session
            .as_ref()
            .expect("session is open until close()")
    }

    /// Writes `bytes` to a file named `name` in the test's temp dir and returns its path.
    fn file(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, bytes).expect("write test file");
        path
    }

    /// Selects `path` in the page's file input, as a user picking a file does.
    async fn pick(&self, path: &Path) {
        let input = self
            .s()
            .find("[data-testid=file-input]")
            .await
            .expect("file input");
        let path = path.to_str().expect("temp paths are UTF-8");
        self.s()
            .send_keys(&input, path)
            .await
            .expect("select the file");
    }

    /// Waits until the page shows results or an error and says which.
    async fn outcome(&self) -> String {
        let script = "var r = document.getElementById('results'), e = document.getElementById('error');\
                      return !e.hidden ? 'error' : (!r.hidden ? 'results' : null);";
        let v = self
            .s()
            .wait_for(script, ANSWER_DEADLINE)
            .await
            .expect("page answers");
        v.as_str().unwrap_or_default().to_string()
    }

    /// The predictions as rendered: (rank, index, label, score) from each row's attributes,
    /// with the row's visible text checked to carry the same label.
    async fn rendered_predictions(&self) -> Vec<(u64, u64, String, f64)> {
        let s = self.s();
        let rows = s.find_all("[data-testid=prediction]").await.expect("rows");
        let mut out = Vec::new();
        for row in &rows {
            let attr = |name: &'static str| async move {
                s.attribute(row, name)
                    .await
                    .expect("attribute")
                    .unwrap_or_default()
            };
            let rank: u64 = attr("data-rank").await.parse().expect("numeric rank");
            let index: u64 = attr("data-index").await.parse().expect("numeric index");
            let score: f64 = attr("data-score").await.parse().expect("numeric score");
            let label = attr("data-label").await;
            assert!(
                s.is_displayed(row).await.expect("displayed"),
                "row {rank} is not visible"
            );
            let shown = s.text(row).await.expect("row text");
            assert!(
                shown.starts_with(&label),
                "row {rank} shows {shown:?}, which does not start with its label {label:?}"
            );
            out.push((rank, index, label, score));
        }
        out
    }

    /// Each row's name in the page's other language (`data-label-other`, shown in small text),
    /// checked to be visible in the row.
    async fn rendered_other_labels(&self) -> Vec<String> {
        let s = self.s();
        let rows = s.find_all("[data-testid=prediction]").await.expect("rows");
        let mut out = Vec::new();
        for row in &rows {
            let other = s
                .attribute(row, "data-label-other")
                .await
                .expect("attribute")
                .unwrap_or_default();
            let shown = s.text(row).await.expect("row text");
            assert!(
                !other.is_empty() && shown.contains(&other),
                "row {shown:?} does not show its other name {other:?}"
            );
            out.push(other);
        }
        out
    }

    /// `(data-i18n key, text)` of every translated element of the page, title included.
    async fn translated_texts(&self) -> Vec<(String, String)> {
        let script = "return Array.prototype.map.call(document.querySelectorAll('[data-i18n]'),\
                      function (e) { return [e.getAttribute('data-i18n'), e.textContent]; });";
        let v = self.s().execute(script, vec![]).await.expect("read texts");
        v.as_array()
            .expect("array")
            .iter()
            .map(|pair| {
                (
                    pair[0].as_str().expect("key").to_string(),
                    pair[1].as_str().expect("text").to_string(),
                )
            })
            .collect()
    }

    /// The document's `lang` attribute.
    async fn html_lang(&self) -> String {
        let v = self
            .s()
            .execute("return document.documentElement.lang;", vec![])
            .await
            .expect("read lang");
        v.as_str().unwrap_or_default().to_string()
    }

    /// Clicks the language switch's button for `lang` (`zh` or `en`).
    async fn switch_to(&self, lang: &str) {
        let button = self
            .s()
            .find(&format!("[data-testid=lang-{lang}]"))
            .await
            .expect("language button");
        assert!(
            self.s().is_displayed(&button).await.expect("displayed"),
            "the {lang} button is not visible"
        );
        self.s().click(&button).await.expect("click");
        let pressed = self
            .s()
            .attribute(&button, "aria-pressed")
            .await
            .expect("aria-pressed");
        assert_eq!(
            pressed.as_deref(),
            Some("true"),
            "{lang} button not pressed"
        );
    }

    /// Visible text of the first element matching `css`.
    async fn text_of(&self, css: &str) -> String {
        let el = self.s().find(css).await.expect("element exists");
        self.s().text(&el).await.expect("element text")
    }

    async fn screenshot(&self, name: &str) {
        let Some(dir) = std::env::var_os("RESNET18_FC_SCREENSHOT_DIR") else {
            return;
        };
        let png = self.s().screenshot().await.expect("screenshot");
        assert!(png.starts_with(b"\x89PNG"), "screenshot is not a PNG");
        std::fs::write(Path::new(&dir).join(format!("{name}.png")), png).expect("write screenshot");
    }

    async fn close(mut self) {
        if let Some(s) = self.session.take() {
            s.close().await.expect("close the session");
        }
    }
}

/// A PNG the model can chew on: a 320×240 gradient with a bright disc, deterministic.
fn photo_png(seed: u32) -> Vec<u8> {
    let img = image::RgbImage::from_fn(320, 240, |x, y| {
        let (dx, dy) = (x as i32 - 200, y as i32 - 110);
        if dx * dx + dy * dy < 70 * 70 {
            image::Rgb([250, (200 + seed * 20) as u8, 40])
        } else {
            image::Rgb([
                (x * 255 / 320) as u8,
                (y * 255 / 240) as u8,
                (90 + seed * 60) as u8,
            ])
        }
    });
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png)
        .expect("encode PNG");
    out.into_inner()
}

/// What `POST classify?top_k=3` answers for `bytes` sent as `content_type`: (status, JSON).
async fn api_classify(server: &Server, bytes: &[u8], content_type: &str) -> (u16, Value) {
    api_classify_in(server, bytes, content_type, "en").await
}

/// Like [`api_classify`], with `&lang=<lang>`.
async fn api_classify_in(
    server: &Server,
    bytes: &[u8],
    content_type: &str,
    lang: &str,
) -> (u16, Value) {
    let resp = crate::support::client()
        .post(format!("{}?top_k=3&lang={lang}", server.classify_url))
        .header("content-type", content_type)
        .body(bytes.to_vec())
        .send()
        .await
        .expect("call the API");
    (resp.status().as_u16(), resp.json_body().await)
}

/// The API's predictions as (rank, index, label, score).
fn api_predictions(body: &Value) -> Vec<(u64, u64, String, f64)> {
    body["predictions"]
        .as_array()
        .expect("predictions array")
        .iter()
        .map(|p| {
            (
                p["rank"].as_u64().expect("rank"),
                p["index"].as_u64().expect("index"),
                p["label"].as_str().expect("label").to_string(),
                p["score"].as_f64().expect("score"),
            )
        })
        .collect()
}

/// Asserts the page shows exactly the API's predictions, in the API's order.
fn assert_same_predictions(page: &[(u64, u64, String, f64)], api: &[(u64, u64, String, f64)]) {
    assert_eq!(api.len(), 3, "the API was asked for 3 classes");
    assert_eq!(
        page.len(),
        api.len(),
        "page shows {page:?}, API says {api:?}"
    );
    for (p, a) in page.iter().zip(api) {
        assert_eq!(
            (p.0, p.1, &p.2),
            (a.0, a.1, &a.2),
            "page row differs from the API"
        );
        assert!(
            (p.3 - a.3).abs() < 1e-9,
            "score {} on the page, {} from the API",
            p.3,
            a.3
        );
    }
}

/// Document and viewport widths: `(scrollWidth, clientWidth, innerWidth)`.
async fn widths(s: &Session) -> (u64, u64, u64) {
    let v = s
        .execute(
            "var d = document.documentElement;\
             return [d.scrollWidth, d.clientWidth, window.innerWidth];",
            vec![],
        )
        .await
        .expect("measure");
    let n = |i: usize| v[i].as_u64().expect("width is a number");
    (n(0), n(1), n(2))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploaded_image_shows_the_api_top3_in_the_same_order() {
    let Some(b) = Browser::start(DESKTOP).await else {
        return;
    };
    let server = start_server().await;
    let png = photo_png(0);
    let photo = b.file("photo.png", &png);

    b.s().goto(&server.page_url).await.expect("load the page");
    b.pick(&photo).await;
    assert_eq!(b.outcome().await, "results");

    let (status, body) = api_classify(&server, &png, "image/png").await;
    assert_eq!(status, 200, "API: {body}");
    assert_same_predictions(&b.rendered_predictions().await, &api_predictions(&body));

    let text = b.text_of("[data-testid=timing-inference]").await;
    assert!(
        text.contains("inference") && text.ends_with("ms"),
        "timing shows {text:?}"
    );
    let preview = b.s().find("[data-testid=preview]").await.expect("preview");
    assert!(
        b.s().is_displayed(&preview).await.expect("displayed"),
        "preview hidden"
    );
    let src = b
        .s()
        .attribute(&preview, "src")
        .await
        .expect("src")
        .unwrap_or_default();
    assert!(src.starts_with("blob:"), "preview src is {src:?}");
    b.screenshot("desktop").await;
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_file_shows_the_api_error_message() {
    let Some(b) = Browser::start(DESKTOP).await else {
        return;
    };
    let server = start_server().await;
    let junk = b"this is plain text, not a PNG\n";
    let broken = b.file("broken.png", junk);

    b.s().goto(&server.page_url).await.expect("load the page");
    b.pick(&broken).await;
    assert_eq!(b.outcome().await, "error");

    // Chromium types a .png file as image/png; the API gets the same bytes and type directly.
    let (status, body) = api_classify(&server, junk, "image/png").await;
    assert!(status >= 400, "the API accepted junk: {status} {body}");
    let expected = body["error"]["message"].as_str().expect("error.message");
    let code = body["error"]["code"].as_str().expect("error.code");
    assert_eq!(b.text_of("[data-testid=error-message]").await, expected);
    let detail = b.text_of("[data-testid=error-detail]").await;
    assert!(
        detail.contains(&format!("HTTP {status}")) && detail.contains(code),
        "detail {detail:?} lacks the status {status} or code {code}"
    );
    let s = b.s();
    let results = s.find("[data-testid=results]").await.expect("results");
    assert!(
        !s.is_displayed(&results).await.expect("displayed"),
        "stale results shown"
    );
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn phone_width_page_has_no_horizontal_overflow() {
    let Some(b) = Browser::start(PHONE).await else {
        return;
    };
    let server = start_server().await;
    let png = photo_png(1);
    let photo = b.file(
        "APhotoWithARatherLongFileNameWithoutAnySpaceOrHyphenThatMustStillWrap.png",
        &png,
    );
    let broken = b.file("broken.png", b"not an image");

    b.s().goto(&server.page_url).await.expect("load the page");
    let (scroll, client, inner) = widths(b.s()).await;
    assert_eq!(
        inner,
        u64::from(PHONE_WIDTH),
        "the viewport is not phone-wide"
    );
    assert!(
        scroll <= client,
        "empty page overflows: {scroll} > {client}"
    );

    b.pick(&photo).await;
    assert_eq!(b.outcome().await, "results");
    assert_eq!(b.rendered_predictions().await.len(), 3);
    let (scroll, client, _) = widths(b.s()).await;
    assert!(
        scroll <= client,
        "page with results overflows: {scroll} > {client}"
    );
    let in_view = "var r = document.getElementById('predictions').getBoundingClientRect();\
                   return r.top >= 0 && r.bottom <= window.innerHeight;";
    let in_view = b.s().execute(in_view, vec![]).await.expect("measure");
    assert_eq!(
        in_view,
        Value::Bool(true),
        "the top-3 list is not entirely in view"
    );
    b.screenshot("phone").await;

    b.pick(&broken).await;
    assert_eq!(b.outcome().await, "error");
    let (scroll, client, _) = widths(b.s()).await;
    assert!(
        scroll <= client,
        "page with an error overflows: {scroll} > {client}"
    );
    b.screenshot("phone-error").await;
    b.close().await;
}

/// Hands `bytes` to the page as a file dropped on the drop zone (`how = "drop"`) or pasted
/// (`how = "paste"`), through the same DOM events a user's drop or paste fires.
async fn deliver(s: &Session, how: &str, name: &str, bytes: &[u8]) {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(bytes);
    let script = "var raw = atob(arguments[0]), a = new Uint8Array(raw.length);\
                  for (var i = 0; i < raw.length; i++) { a[i] = raw.charCodeAt(i); }\
                  var dt = new DataTransfer();\
                  dt.items.add(new File([a], arguments[1], {type: 'image/png'}));\
                  var init = {bubbles: true, cancelable: true};\
                  if (arguments[2] === 'drop') {\
                    init.dataTransfer = dt;\
                    document.getElementById('dropzone').dispatchEvent(new DragEvent('drop', init));\
                  } else {\
                    init.clipboardData = dt;\
                    document.body.dispatchEvent(new ClipboardEvent('paste', init));\
                  }";
    s.execute(script, vec![json!(b64), json!(name), json!(how)])
        .await
        .expect("dispatch the event");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_and_pasted_images_are_classified() {
    let Some(b) = Browser::start(DESKTOP).await else {
        return;
    };
    let server = start_server().await;
    b.s().goto(&server.page_url).await.expect("load the page");

    for (how, seed) in [("drop", 2), ("paste", 3)] {
        let png = photo_png(seed);
        let name = format!("{how}.png");
        deliver(b.s(), how, &name, &png).await;
        // Wait for this file's caption so the previous result cannot be mistaken for this one.
        let wait = format!(
            "var c = document.getElementById('preview-name').textContent;\
             return c.indexOf('{name}') === 0 && !document.getElementById('results').hidden;"
        );
        b.s()
            .wait_for(&wait, ANSWER_DEADLINE)
            .await
            .expect("page shows results");
        let (status, body) = api_classify(&server, &png, "image/png").await;
        assert_eq!(status, 200, "API: {body}");
        assert_same_predictions(&b.rendered_predictions().await, &api_predictions(&body));
    }
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn page_under_a_base_path_calls_classify_relative_to_itself() {
    let Some(b) = Browser::start(DESKTOP).await else {
        return;
    };
    // FC 2.0's HTTP trigger URL shape (x-fc-base-path, docs/function-compute.md §1 "Request headers"); the page is loaded
    // without a trailing slash, where a naive relative URL would lose the last segment.
    let server = start_under_base_path("/2016-08-15/proxy/svc/fn").await;
    assert!(!server.page_url.ends_with('/'));
    let png = photo_png(4);
    let photo = b.file("photo.png", &png);

    b.s().goto(&server.page_url).await.expect("load the page");
    b.pick(&photo).await;
    assert_eq!(
        b.outcome().await,
        "results",
        "the page did not reach {}",
        server.classify_url
    );
    let (status, body) = api_classify(&server, &png, "image/png").await;
    assert_eq!(status, 200, "API: {body}");
    assert_same_predictions(&b.rendered_predictions().await, &api_predictions(&body));
    b.close().await;
}

/// A raw HTTP/1.1 response closing the connection.
fn raw_response(status: &str, content_type: &str, body: &str) -> String {
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    )
}

/// Reads one request (head and a `Content-Length` body) and returns whether it was a `GET`.
async fn read_request(conn: &mut tokio::net::TcpStream) -> bool {
    let mut data = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        let Ok(n) = conn.read(&mut buf).await else {
            return false;
        };
        if n == 0 {
            break;
        }
        data.extend_from_slice(&buf[..n]);
        let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") else {
            continue;
        };
        let head = String::from_utf8_lossy(&data[..end]).to_ascii_lowercase();
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        if data.len() >= end + 4 + length {
            break;
        }
    }
    data.starts_with(b"GET ")
}

/// A stand-in for what sits between a browser and the function: it serves the page for every
/// `GET` and answers every other request with `post_answer` (a raw HTTP response), or, when
/// that is `None`, closes the connection without a byte, so the page meets a network failure.
async fn serve_page_with(post_answer: Option<String>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}/", listener.local_addr().expect("addr"));
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let post_answer = post_answer.clone();
            tokio::spawn(async move {
                let answer = if read_request(&mut conn).await {
                    let html = resnet18_fc::web::INDEX_HTML;
                    raw_response("200 OK", resnet18_fc::web::INDEX_CONTENT_TYPE, html)
                } else {
                    match post_answer {
                        Some(answer) => answer,
                        None => return, // dropped: connection closed with no response
                    }
                };
                let _ = conn.write_all(answer.as_bytes()).await;
                let _ = conn.shutdown().await;
            });
        }
    });
    url
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_server_shows_a_network_error() {
    let Some(b) = Browser::start(DESKTOP).await else {
        return;
    };
    let url = serve_page_with(None).await;
    let photo = b.file("photo.png", &photo_png(0));

    b.s().goto(&url).await.expect("load the page");
    b.pick(&photo).await;
    assert_eq!(b.outcome().await, "error");
    let message = b.text_of("[data-testid=error-message]").await;
    assert!(
        message.starts_with("Could not reach the server"),
        "page says {message:?}"
    );
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_picker_is_reached_by_keyboard_with_a_visible_focus_ring() {
    let Some(b) = Browser::start(DESKTOP).await else {
        return;
    };
    let server = start_server().await;
    b.s().goto(&server.page_url).await.expect("load the page");

    // The language switch (中文, English) comes first, in the header; then the picker.
    for want in ["zh", "en"] {
        b.s().press_key(TAB).await.expect("press Tab");
        let v = b
            .s()
            .execute(
                "var a = document.activeElement; return a ? a.getAttribute('data-lang') : null;",
                vec![],
            )
            .await
            .expect("read focus");
        assert_eq!(v, json!(want), "Tab stop is not the {want} button: {v}");
    }
    b.s().press_key(TAB).await.expect("press Tab");
    let focus = "var a = document.activeElement;\
                 var ring = getComputedStyle(document.getElementById('pick-label')).outlineStyle;\
                 return [a ? a.id : null, ring];";
    let v = b.s().execute(focus, vec![]).await.expect("read focus");
    assert_eq!(
        v[0],
        json!("file"),
        "the third Tab stop is not the file input: {v}"
    );
    assert_eq!(v[1], json!("solid"), "the picker shows no focus ring: {v}");
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_errors_outside_the_api_contract_are_shown_readably() {
    let Some(b) = Browser::start(DESKTOP).await else {
        return;
    };
    // FC's own error body shape, e.g. for a body over the 32 MB limit.
    let fc = r#"{"ErrorCode":"InvalidArgument","ErrorMessage":"request body is too large"}"#;
    let fc_url = serve_page_with(Some(raw_response(
        "400 Bad Request",
        "application/json",
        fc,
    )))
    .await;
    let html = "<html><body><h1>502 Bad Gateway</h1></body></html>";
    let html_url = serve_page_with(Some(raw_response("502 Bad Gateway", "text/html", html))).await;
    let photo = b.file("photo.png", &photo_png(0));

    b.s().goto(&fc_url).await.expect("load the page");
    b.pick(&photo).await;
    assert_eq!(b.outcome().await, "error");
    assert_eq!(
        b.text_of("[data-testid=error-message]").await,
        "request body is too large"
    );
    let detail = b.text_of("[data-testid=error-detail]").await;
    assert_eq!(detail, "HTTP 400 · InvalidArgument");

    b.s().goto(&html_url).await.expect("load the page");
    b.pick(&photo).await;
    assert_eq!(b.outcome().await, "error");
    let message = b.text_of("[data-testid=error-message]").await;
    assert_eq!(message, "The server answered with HTTP 502 Bad Gateway.");
    let detail = b.text_of("[data-testid=error-detail]").await;
    assert!(detail.contains("502 Bad Gateway"), "detail {detail:?}");
    b.close().await;
}

/// Whether `text` has a CJK ideograph in it.
fn has_chinese(text: &str) -> bool {
    text.chars().any(|c| ('\u{4e00}'..='\u{9fff}').contains(&c))
}

/// Asserts that the page's rows are the API's `lang=zh` answer shown the Chinese way: name in
/// Chinese, English in small text.
async fn assert_rows_in_chinese(b: &Browser, zh: &Value) {
    let rows = b.rendered_predictions().await;
    let others = b.rendered_other_labels().await;
    let api = api_predictions(zh);
    assert_same_predictions(&rows, &api);
    let english: Vec<&str> = zh["predictions"]
        .as_array()
        .expect("predictions")
        .iter()
        .map(|p| p["label_en"].as_str().expect("label_en"))
        .collect();
    assert_eq!(others, english);
    for (_, _, label, _) in &rows {
        assert!(has_chinese(label), "{label:?} is not a Chinese name");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chinese_browser_gets_the_chinese_page() {
    let Some(b) = Browser::start_in(DESKTOP, CHINESE).await else {
        return;
    };
    let server = start_server().await;
    let png = photo_png(5);
    let photo = b.file("照片.png", &png);
    let broken = b.file("broken.png", b"not an image at all");

    b.s().goto(&server.page_url).await.expect("load the page");
    assert_eq!(b.html_lang().await, "zh-CN");
    assert_eq!(b.text_of("h1").await, "AI 万物识别");
    assert_eq!(b.text_of("#pick-label").await, "上传图片");
    let idle = b.text_of("[data-testid=status]").await;
    assert!(idle.contains("开始识别"), "status {idle:?}");
    let title = b
        .s()
        .execute("return document.title;", vec![])
        .await
        .expect("title");
    assert!(
        title.as_str().is_some_and(|t| t.starts_with("AI 万物识别")),
        "{title}"
    );
    let zh = b
        .s()
        .find("[data-testid=lang-zh]")
        .await
        .expect("zh button");
    let pressed = b.s().attribute(&zh, "aria-pressed").await.expect("attr");
    assert_eq!(pressed.as_deref(), Some("true"));

    b.pick(&photo).await;
    assert_eq!(b.outcome().await, "results");
    let (status, body) = api_classify_in(&server, &png, "image/png", "zh").await;
    assert_eq!(status, 200, "API: {body}");
    assert_rows_in_chinese(&b, &body).await;
    let status_line = b.text_of("[data-testid=status]").await;
    assert!(
        status_line.starts_with("识别结果"),
        "status {status_line:?}"
    );
    let best = body["predictions"][0]["label"].as_str().expect("label");
    assert!(
        status_line.contains(best),
        "status {status_line:?} lacks {best:?}"
    );
    let timing = b.text_of("[data-testid=timing-inference]").await;
    assert!(
        timing.starts_with("推理") && timing.ends_with("ms"),
        "timing {timing:?}"
    );
    let request = b.text_of("[data-testid=request-id]").await;
    assert!(request.starts_with("请求 ID"), "{request:?}");
    b.screenshot("desktop-zh").await;

    b.pick(&broken).await;
    assert_eq!(b.outcome().await, "error");
    let (status, body) = api_classify(&server, b"not an image at all", "image/png").await;
    assert!(status >= 400, "the API accepted junk: {status} {body}");
    let english = body["error"]["message"].as_str().expect("message");
    let code = body["error"]["code"].as_str().expect("code");
    let message = b.text_of("[data-testid=error-message]").await;
    assert!(
        has_chinese(&message) && message != english,
        "error shown as {message:?}"
    );
    let detail = b.text_of("[data-testid=error-detail]").await;
    assert!(
        detail.contains(&format!("HTTP {status}")) && detail.contains(code),
        "detail {detail:?}"
    );
    assert_eq!(b.text_of("[data-testid=status]").await, "识别失败。");
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_language_switch_translates_everything_and_is_remembered() {
    let Some(b) = Browser::start(DESKTOP).await else {
        return;
    };
    let server = start_server().await;
    let png = photo_png(6);
    let photo = b.file("photo.png", &png);

    b.s().goto(&server.page_url).await.expect("load the page");
    assert_eq!(b.html_lang().await, "en");
    let english = b.translated_texts().await;
    assert!(english.len() >= 8, "few translated elements: {english:?}");
    b.pick(&photo).await;
    assert_eq!(b.outcome().await, "results");
    let (status, en) = api_classify(&server, &png, "image/png").await;
    assert_eq!(status, 200, "API: {en}");
    let (status, zh) = api_classify_in(&server, &png, "image/png", "zh").await;
    assert_eq!(status, 200, "API: {zh}");
    // English page: English names, the Chinese ones in small text.
    assert_same_predictions(&b.rendered_predictions().await, &api_predictions(&en));
    let chinese_names: Vec<String> = api_predictions(&zh).into_iter().map(|p| p.2).collect();
    assert_eq!(b.rendered_other_labels().await, chinese_names);

    b.switch_to("zh").await;
    assert_eq!(b.html_lang().await, "zh-CN");
    let chinese = b.translated_texts().await;
    assert_eq!(chinese.len(), english.len());
    for ((key, en_text), (_, zh_text)) in english.iter().zip(&chinese) {
        assert!(
            !zh_text.trim().is_empty() && zh_text != en_text,
            "{key} is not translated: {en_text:?} / {zh_text:?}"
        );
    }
    // The shown answer is redrawn in Chinese without asking the server again.
    assert_rows_in_chinese(&b, &zh).await;
    let status_line = b.text_of("[data-testid=status]").await;
    assert!(
        status_line.starts_with("识别结果"),
        "status {status_line:?}"
    );

    // Remembered: a reload in this English browser stays Chinese.
    b.s().goto(&server.page_url).await.expect("reload");
    assert_eq!(b.html_lang().await, "zh-CN");
    assert_eq!(b.text_of("#pick-label").await, "上传图片");

    // An error switches language too.
    let broken = b.file("broken.png", b"plain text");
    b.pick(&broken).await;
    assert_eq!(b.outcome().await, "error");
    let zh_message = b.text_of("[data-testid=error-message]").await;
    assert!(has_chinese(&zh_message), "{zh_message:?}");
    b.switch_to("en").await;
    let (_, body) = api_classify(&server, b"plain text", "image/png").await;
    let api_message = body["error"]["message"].as_str().expect("message");
    assert_eq!(b.text_of("[data-testid=error-message]").await, api_message);
    assert_eq!(
        b.text_of("[data-testid=status]").await,
        "Classification failed."
    );
    assert_eq!(b.translated_texts().await, english);

    b.s().goto(&server.page_url).await.expect("reload");
    assert_eq!(b.html_lang().await, "en");
    assert_eq!(b.text_of("#pick-label").await, "Choose an image");
    b.close().await;
}

//! A minimal W3C WebDriver client (https://www.w3.org/TR/webdriver2/) over reqwest + serde_json,
//! and a guard that runs chromedriver for the duration of a test.
//!
//! Why not fantoccini or thirtyfour: the tests need a dozen endpoints of a stable spec, and the
//! crate already has reqwest, serde_json and base64; a hand-rolled client adds no dependency tree
//! and no build time on a 2-core machine, and its errors show chromedriver's own message.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{Value, json};

/// WebDriver's code for the Tab key (spec §17.4, "normalised key value" table).
pub const TAB: &str = "\u{E004}";

/// The key under which WebDriver returns an element reference (spec §12.1).
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

/// Why a WebDriver call failed.
#[derive(Debug, thiserror::Error)]
pub enum WebDriverError {
    /// Could not talk to chromedriver at all.
    #[error("chromedriver HTTP: {0}")]
    Http(#[from] reqwest::Error),
    /// chromedriver answered with a WebDriver error object.
    #[error("webdriver {status} {error}: {message}")]
    Protocol {
        /// HTTP status.
        status: u16,
        /// WebDriver error code, e.g. `no such element`.
        error: String,
        /// chromedriver's message.
        message: String,
    },
    /// The answer did not have the shape the spec promises.
    #[error("unexpected webdriver answer: {0}")]
    Shape(String),
    /// chromedriver could not be started.
    #[error("cannot start chromedriver: {0}")]
    Start(String),
}

/// A running chromedriver process, killed on drop.
pub struct Driver {
    child: Child,
    url: String,
}

impl Driver {
    /// Starts `chromedriver --port=0` and reads the port it picked from its stdout.
    pub fn start(chromedriver: &Path) -> Result<Self, WebDriverError> {
        let mut child = Command::new(chromedriver)
            .args(["--port=0", "--log-level=WARNING"])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| WebDriverError::Start(format!("{}: {e}", chromedriver.display())))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| WebDriverError::Start("no stdout".into()))?;
        let mut lines = BufReader::new(stdout).lines();
        let port = loop {
            let Some(Ok(line)) = lines.next() else {
                let _ = child.kill();
                return Err(WebDriverError::Start(
                    "exited before announcing its port".into(),
                ));
            };
            // "ChromeDriver was started successfully on port 45609."
            if let Some(rest) = line.split("successfully on port ").nth(1) {
                break rest.trim_end_matches('.').trim().to_string();
            }
        };
        // Keep draining stdout so chromedriver never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Ok(Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
        })
    }

    /// Opens a headless Chromium session with a fresh profile in `profile_dir`, whose user
    /// prefers `accept_languages` (e.g. `"zh-CN,zh"`): what it sends as `Accept-Language` and
    /// what pages see in `navigator.languages`.
    pub async fn session(
        &self,
        chromium: &Path,
        profile_dir: &Path,
        viewport: Viewport,
        accept_languages: &str,
    ) -> Result<Session, WebDriverError> {
        // reqwest is built without a default TLS provider; plain http still needs one installed.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(120))
            .build()?;
        let mut args = vec![
            "--headless=new".to_string(),
            "--no-sandbox".into(),
            "--disable-gpu".into(),
            "--disable-background-networking".into(),
            "--disable-component-update".into(),
            "--disable-sync".into(),
            "--disable-quic".into(),
            "--no-first-run".into(),
            "--disable-dev-shm-usage".into(),
            format!("--user-data-dir={}", profile_dir.display()),
            format!("--accept-lang={accept_languages}"),
        ];
        let mut emulation = None;
        match viewport {
            Viewport::Desktop { width, height } => {
                args.push(format!("--window-size={width},{height}"));
            }
            // A desktop window cannot be narrower than 500 px, so phones are emulated: the
            // viewport gets the phone's CSS width and the page's viewport meta tag applies.
            Viewport::Phone { width, height } => {
                emulation = Some(json!({"deviceMetrics": {
                    "width": width, "height": height, "pixelRatio": 2.0, "touch": true, "mobile": true,
                }}));
            }
        }
        let prefs = json!({"intl": {"accept_languages": accept_languages}});
        let mut options = json!({"binary": chromium, "args": args, "prefs": prefs});
        if let Some(emulation) = emulation {
            options["mobileEmulation"] = emulation;
        }
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": options,
        }}});
        let value = call(
            &http,
            reqwest::Method::POST,
            &format!("{}/session", self.url),
            Some(caps),
        )
        .await?;
        let id = value["sessionId"]
            .as_str()
            .ok_or_else(|| WebDriverError::Shape(format!("no sessionId in {value}")))?;
        Ok(Session {
            http,
            base: format!("{}/session/{id}", self.url),
            open: true,
        })
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The size of the page's viewport, in CSS pixels.
#[derive(Debug, Clone, Copy)]
pub enum Viewport {
    /// A desktop browser window of this outer size.
    Desktop {
        /// Width.
        width: u32,
        /// Height.
        height: u32,
    },
    /// A phone-sized, touch, mobile viewport (Chromium's device emulation).
    Phone {
        /// Width.
        width: u32,
        /// Height.
        height: u32,
    },
}

/// One browser session. [`Session::close`] ends it; if a test panics first, drop ends it, so no
/// Chromium outlives its test (chromedriver does not take it down when killed).
pub struct Session {
    http: reqwest::Client,
    base: String,
    open: bool,
}

/// A reference to a DOM element inside a [`Session`].
#[derive(Debug, Clone)]
pub struct Element(String);

impl Session {
    async fn cmd(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, WebDriverError> {
        call(&self.http, method, &format!("{}{path}", self.base), body).await
    }

    /// Navigates to `url` and waits for the load event.
    pub async fn goto(&self, url: &str) -> Result<(), WebDriverError> {
        self.cmd(reqwest::Method::POST, "/url", Some(json!({ "url": url })))
            .await
            .map(|_| ())
    }

    /// The first element matching a CSS selector.
    pub async fn find(&self, css: &str) -> Result<Element, WebDriverError> {
        let q = json!({"using": "css selector", "value": css});
        let v = self.cmd(reqwest::Method::POST, "/element", Some(q)).await?;
        element_id(&v).map(Element)
    }

    /// All elements matching a CSS selector, in document order.
    pub async fn find_all(&self, css: &str) -> Result<Vec<Element>, WebDriverError> {
        let q = json!({"using": "css selector", "value": css});
        let v = self
            .cmd(reqwest::Method::POST, "/elements", Some(q))
            .await?;
        v.as_array()
            .ok_or_else(|| WebDriverError::Shape(format!("elements: {v}")))?
            .iter()
            .map(|e| element_id(e).map(Element))
            .collect()
    }

    /// Types `text` into an element; for `<input type=file>` this selects the file at that path.
    pub async fn send_keys(&self, el: &Element, text: &str) -> Result<(), WebDriverError> {
        let path = format!("/element/{}/value", el.0);
        self.cmd(reqwest::Method::POST, &path, Some(json!({ "text": text })))
            .await
            .map(|_| ())
    }

    /// Clicks the element as a user does (WebDriver Element Click: scrolls it into view and
    /// fails if something else would receive the click).
    pub async fn click(&self, el: &Element) -> Result<(), WebDriverError> {
        let path = format!("/element/{}/click", el.0);
        self.cmd(reqwest::Method::POST, &path, Some(json!({})))
            .await
            .map(|_| ())
    }

    /// The element's rendered text (what a user sees).
    pub async fn text(&self, el: &Element) -> Result<String, WebDriverError> {
        let v = self
            .cmd(
                reqwest::Method::GET,
                &format!("/element/{}/text", el.0),
                None,
            )
            .await?;
        as_string(v)
    }

    /// An attribute of the element, `None` when absent.
    pub async fn attribute(
        &self,
        el: &Element,
        name: &str,
    ) -> Result<Option<String>, WebDriverError> {
        let path = format!("/element/{}/attribute/{name}", el.0);
        let v = self.cmd(reqwest::Method::GET, &path, None).await?;
        if v.is_null() {
            return Ok(None);
        }
        as_string(v).map(Some)
    }

    /// Whether the element is displayed (WebDriver's "element displayedness").
    pub async fn is_displayed(&self, el: &Element) -> Result<bool, WebDriverError> {
        let path = format!("/element/{}/displayed", el.0);
        let v = self.cmd(reqwest::Method::GET, &path, None).await?;
        v.as_bool()
            .ok_or_else(|| WebDriverError::Shape(format!("displayed: {v}")))
    }

    /// Runs `script` (a function body; `arguments[i]` are `args`) and returns its result.
    pub async fn execute(&self, script: &str, args: Vec<Value>) -> Result<Value, WebDriverError> {
        let body = json!({"script": script, "args": args});
        self.cmd(reqwest::Method::POST, "/execute/sync", Some(body))
            .await
    }

    /// Polls `script` until it returns something other than `null`/`false`, or `deadline` passes.
    pub async fn wait_for(
        &self,
        script: &str,
        deadline: Duration,
    ) -> Result<Value, WebDriverError> {
        let started = Instant::now();
        loop {
            let v = self.execute(script, vec![]).await?;
            if !(v.is_null() || v == Value::Bool(false)) {
                return Ok(v);
            }
            if started.elapsed() > deadline {
                return Err(WebDriverError::Shape(format!(
                    "condition not met within {deadline:?}: {script}"
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Presses and releases one key on the keyboard (WebDriver actions, spec §15); `key` is a
    /// character or a WebDriver key code such as [`TAB`].
    pub async fn press_key(&self, key: &str) -> Result<(), WebDriverError> {
        let actions = json!({"actions": [{"type": "key", "id": "keyboard", "actions": [
            {"type": "keyDown", "value": key},
            {"type": "keyUp", "value": key},
        ]}]});
        self.cmd(reqwest::Method::POST, "/actions", Some(actions))
            .await
            .map(|_| ())
    }

    /// A PNG screenshot of the viewport.
    pub async fn screenshot(&self) -> Result<Vec<u8>, WebDriverError> {
        let v = self.cmd(reqwest::Method::GET, "/screenshot", None).await?;
        let b64 = as_string(v)?;
        base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|e| WebDriverError::Shape(format!("screenshot base64: {e}")))
    }

    /// Ends the session, which closes the browser.
    pub async fn close(mut self) -> Result<(), WebDriverError> {
        self.open = false;
        self.cmd(reqwest::Method::DELETE, "", None)
            .await
            .map(|_| ())
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if self.open {
            delete_blocking(&self.base);
        }
    }
}

/// `DELETE <url>` over a plain blocking socket: usable in `Drop`, even during a panic.
fn delete_blocking(url: &str) {
    use std::io::{Read, Write};
    let Some(rest) = url.strip_prefix("http://") else {
        return;
    };
    let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let Ok(mut conn) = std::net::TcpStream::connect(host) else {
        return;
    };
    let _ = conn.set_read_timeout(Some(Duration::from_secs(30)));
    let req = format!("DELETE {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    if conn.write_all(req.as_bytes()).is_ok() {
        // chromedriver answers after the browser has quit; the first bytes are enough (it may
        // keep the connection open, so reading to the end would wait for the timeout).
        let _ = conn.read(&mut [0u8; 1024]);
    }
}

/// Sends one command and unwraps the spec's `{"value": ...}` envelope.
async fn call(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    body: Option<Value>,
) -> Result<Value, WebDriverError> {
    let mut req = http.request(method, url);
    if let Some(body) = body {
        req = req
            .header("content-type", "application/json")
            .body(body.to_string());
    }
    let resp = req.send().await?;
    let status = resp.status();
    let bytes = resp.bytes().await?;
    let mut parsed: Value = serde_json::from_slice(&bytes)
        .map_err(|e| WebDriverError::Shape(format!("{e}: {}", String::from_utf8_lossy(&bytes))))?;
    let value = parsed["value"].take();
    if status.is_success() {
        return Ok(value);
    }
    Err(WebDriverError::Protocol {
        status: status.as_u16(),
        error: value["error"]
            .as_str()
            .unwrap_or("unknown error")
            .to_string(),
        message: value["message"].as_str().unwrap_or_default().to_string(),
    })
}

fn element_id(v: &Value) -> Result<String, WebDriverError> {
    v[ELEMENT_KEY]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| WebDriverError::Shape(format!("not an element: {v}")))
}

fn as_string(v: Value) -> Result<String, WebDriverError> {
    match v {
        Value::String(s) => Ok(s),
        other => Err(WebDriverError::Shape(format!(
            "expected a string, got {other}"
        ))),
    }
}

/// Locates chromedriver and Chromium: `$CHROMEDRIVER` / `$CHROME_BIN`, else `PATH`.
pub fn find_tools() -> Result<(PathBuf, PathBuf), String> {
    let driver = from_env_or_path("CHROMEDRIVER", &["chromedriver"]);
    let browser = from_env_or_path(
        "CHROME_BIN",
        &["chromium", "chromium-browser", "google-chrome"],
    );
    match (driver, browser) {
        (Some(d), Some(b)) => Ok((d, b)),
        (d, b) => {
            let mut missing = Vec::new();
            if d.is_none() {
                missing.push("chromedriver");
            }
            if b.is_none() {
                missing.push("chromium");
            }
            Err(missing.join(" and "))
        }
    }
}

fn from_env_or_path(var: &str, names: &[&str]) -> Option<PathBuf> {
    if let Some(p) = std::env::var_os(var).map(PathBuf::from) {
        return p.is_file().then_some(p);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|dir| names.iter().map(move |n| dir.join(n)))
        .find(|p| p.is_file())
}

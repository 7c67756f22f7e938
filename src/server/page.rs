//! Placeholder for `GET /` until the real page (`crate::web::INDEX_HTML`) is merged: a plain
//! upload form that posts to `/classify` and prints the JSON answer. Self-contained, no CDN.

/// The placeholder page.
pub const INDEX_HTML: &str = r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>resnet18-fc</title>
</head>
<body>
<h1>resnet18-fc</h1>
<p>Choose an image; it is sent to <code>POST /classify</code>.</p>
<input id="file" type="file" accept="image/*">
<pre id="out"></pre>
<script>
document.getElementById("file").addEventListener("change", async (event) => {
  const file = event.target.files[0];
  const out = document.getElementById("out");
  if (!file) return;
  out.textContent = "classifying…";
  try {
    const response = await fetch("classify", {
      method: "POST",
      headers: {"Content-Type": file.type || "application/octet-stream"},
      body: file,
    });
    out.textContent = JSON.stringify(await response.json(), null, 2);
  } catch (error) {
    out.textContent = "request failed: " + error;
  }
});
</script>
</body>
</html>
"#;

//! `meshctl analyze` end to end: the real binary over the repository's example mesh and over
//! every deliberately broken file in `tests/data/invalid/`, whose `# expect:` comments list
//! exactly the diagnostics analyze must print for it (exit 1), and every warning-only file in
//! `tests/data/warnings/` (exit 0).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use anyhow::{Context, Result, ensure};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn meshctl(args: &[&str]) -> Result<Output> {
    Command::new(env!("CARGO_BIN_EXE_meshctl"))
        .args(args)
        .current_dir(repo_root())
        .output()
        .context("running meshctl")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn examples_are_clean() -> Result<()> {
    let out = meshctl(&["analyze", "deploy/examples/"])?;
    let stdout = text(&out.stdout);
    ensure!(out.status.code() == Some(0), "exit {:?}\n{stdout}{}", out.status.code(), text(&out.stderr));
    // Clean means no warnings either: the examples are what newcomers copy.
    ensure!(stdout.trim().is_empty(), "unexpected diagnostics:\n{stdout}");
    ensure!(text(&out.stderr).contains("0 errors, 0 warnings"), "summary: {}", text(&out.stderr));
    Ok(())
}

/// The `# expect: ` lines of a file, in order.
fn expectations(path: &Path) -> Result<Vec<String>> {
    let content = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(content
        .lines()
        .filter_map(|l| l.strip_prefix("# expect: "))
        .map(|l| l.trim_end().to_string())
        .collect())
}

fn counts(lines: impl IntoIterator<Item = String>) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for l in lines {
        *m.entry(l).or_default() += 1;
    }
    m
}

/// Runs analyze on every file of `tests/data/<dir>/`, one at a time, and checks that it
/// prints exactly the file's `# expect:` lines and exits with `want_code`. Returns how many
/// files were checked.
fn check_expectations(dir: &str, want_code: i32) -> Result<usize> {
    let path = repo_root().join("tests/data").join(dir);
    let mut files: Vec<PathBuf> =
        std::fs::read_dir(&path)?.map(|e| e.map(|e| e.path())).collect::<std::io::Result<_>>()?;
    files.retain(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml" | "json")));
    files.sort();

    let mut failures = Vec::new();
    for file in &files {
        let name = file.file_name().unwrap_or_default().to_string_lossy().into_owned();
        let expected = expectations(file)?;
        if expected.is_empty() {
            failures.push(format!("{name}: no `# expect:` line"));
            continue;
        }
        let has_error = expected.iter().any(|l| !l.contains(": warning: "));
        if has_error != (want_code == 1) {
            failures.push(format!(
                "{name}: files in {dir}/ must expect {}",
                if want_code == 1 { "an error" } else { "only warnings" }
            ));
        }
        let rel = format!("tests/data/{dir}/{name}");
        let out = meshctl(&["analyze", &rel])?;
        let stdout = text(&out.stdout);
        let mut problems = Vec::new();
        if out.status.code() != Some(want_code) {
            problems.push(format!("exit code {:?}, expected {want_code}", out.status.code()));
        }
        // Every line is `path:doc kind ns/name: ...`; the origin must be this file.
        let mut got = Vec::new();
        for line in stdout.lines() {
            match line.split_once(' ') {
                Some((origin, rest)) if origin.starts_with(&format!("{rel}:")) => got.push(rest.to_string()),
                _ => problems.push(format!("line without this file's origin: {line}")),
            }
        }
        let (want, got) = (counts(expected), counts(got));
        for (line, n) in &want {
            if got.get(line) != Some(n) {
                problems.push(format!("missing: {line}"));
            }
        }
        for (line, n) in &got {
            if want.get(line) != Some(n) {
                problems.push(format!("unexpected: {line}"));
            }
        }
        if !problems.is_empty() {
            failures.push(format!("{name}:\n  {}", problems.join("\n  ")));
        }
    }
    ensure!(
        failures.is_empty(),
        "{} of {} files failed:\n{}",
        failures.len(),
        files.len(),
        failures.join("\n")
    );
    Ok(files.len())
}

#[test]
fn every_invalid_file_reports_exactly_its_expected_diagnostics_and_exits_1() -> Result<()> {
    let n = check_expectations("invalid", 1)?;
    ensure!(n >= 20, "only {n} invalid files");
    Ok(())
}

#[test]
fn warning_only_files_report_their_warnings_and_exit_0() -> Result<()> {
    let n = check_expectations("warnings", 0)?;
    ensure!(n >= 2, "only {n} warning files");
    Ok(())
}

#[test]
fn output_is_sorted_by_file_then_document() -> Result<()> {
    let out = meshctl(&["analyze", "tests/data/invalid/"])?;
    ensure!(out.status.code() == Some(1), "exit {:?}", out.status.code());
    let origins: Vec<(String, usize)> = text(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once(' ').map(|(o, _)| o.to_string()))
        .filter_map(|o| o.rsplit_once(':').and_then(|(p, d)| Some((p.to_string(), d.parse().ok()?))))
        .collect();
    ensure!(!origins.is_empty(), "no diagnostics");
    let mut sorted = origins.clone();
    sorted.sort();
    ensure!(origins == sorted, "not sorted: {origins:?}");
    Ok(())
}

#[test]
fn json_output_names_the_fields() -> Result<()> {
    let out = meshctl(&["analyze", "--output", "json", "tests/data/invalid/40-unknown-subset.yaml"])?;
    ensure!(out.status.code() == Some(1), "exit {:?}", out.status.code());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).context("stdout is not JSON")?;
    let items = v.as_array().context("not an array")?;
    ensure!(items.len() == 1, "{v:#}");
    let d = &items[0];
    ensure!(d["severity"] == "error", "{d:#}");
    ensure!(d["origin"]["path"] == "tests/data/invalid/40-unknown-subset.yaml", "{d:#}");
    ensure!(d["origin"]["doc"] == 2, "{d:#}");
    ensure!(d["object"]["kind"] == "VirtualService", "{d:#}");
    ensure!(d["object"]["namespace"] == "bookinfo", "{d:#}");
    ensure!(d["object"]["name"] == "reviews", "{d:#}");
    ensure!(d["field"] == "spec.http[0].route[1].destination.subset", "{d:#}");
    ensure!(d["message"].as_str().is_some_and(|m| m.contains("\"v4\"")), "{d:#}");

    // A clean run is an empty array.
    let out = meshctl(&["analyze", "-o", "json", "deploy/examples"])?;
    ensure!(out.status.code() == Some(0), "exit {:?}", out.status.code());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    ensure!(v == serde_json::json!([]), "{v:#}");
    Ok(())
}

#[test]
fn unreadable_path_is_a_usage_error_naming_it() -> Result<()> {
    let out = meshctl(&["analyze", "deploy/examples", "no/such/dir.yaml"])?;
    ensure!(out.status.code() == Some(2), "exit {:?}", out.status.code());
    let stderr = text(&out.stderr);
    ensure!(stderr.contains("no/such/dir.yaml"), "stderr: {stderr}");
    ensure!(out.stdout.is_empty(), "stdout: {}", text(&out.stdout));
    Ok(())
}

#[test]
fn missing_path_argument_is_a_usage_error() -> Result<()> {
    let out = meshctl(&["analyze"])?;
    ensure!(out.status.code() == Some(2), "exit {:?}", out.status.code());
    Ok(())
}

#[test]
fn ignored_objects_are_notes_only_with_verbose() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("mixed.yaml");
    std::fs::write(
        &file,
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\n  namespace: shop\nspec: {}\n---\n\
         apiVersion: v1\nkind: Service\nmetadata:\n  name: web\n  namespace: shop\nspec:\n  ports:\n  - port: 80\n",
    )?;
    let path = file.to_str().context("temp path")?;
    let quiet = meshctl(&["analyze", path])?;
    ensure!(quiet.status.code() == Some(0), "exit {:?}: {}", quiet.status.code(), text(&quiet.stdout));
    ensure!(quiet.stdout.is_empty(), "stdout: {}", text(&quiet.stdout));
    let verbose = meshctl(&["analyze", "-v", path])?;
    ensure!(verbose.status.code() == Some(0), "exit {:?}", verbose.status.code());
    let stdout = text(&verbose.stdout);
    ensure!(stdout.contains(&format!("{path}:0 Deployment shop/web: note: ignored")), "stdout: {stdout}");
    Ok(())
}

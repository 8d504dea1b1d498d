//! The `lade.toml` document as serde reads it. Unknown keys are errors (`deny_unknown_fields`);
//! values that later checks may reject keep their span so errors can point at them.

use serde::Deserialize;
use std::collections::BTreeMap;
use toml::Spanned;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpecFile {
    pub image: ImageSection,
    #[serde(default)]
    pub layer: Vec<LayerSection>,
    pub java: Option<Spanned<JavaSection>>,
    pub cargo: Option<Spanned<CargoSection>>,
    pub cache: Option<CacheSection>,
}

/// `[cache]`: BuildKit's `--cache-from` / `--cache-to` values.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheSection {
    #[serde(default)]
    pub from: Vec<Spanned<String>>,
    #[serde(default)]
    pub to: Vec<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ImageSection {
    #[serde(default = "scratch")]
    pub from: Spanned<String>,
    pub platform: Option<Spanned<String>>,
    pub entrypoint: Option<Vec<String>>,
    pub cmd: Option<Vec<String>>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    pub workdir: Option<Spanned<String>>,
    pub user: Option<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub ports: Vec<Spanned<Port>>,
    #[serde(default)]
    pub volumes: Vec<Spanned<String>>,
    pub stop_signal: Option<String>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    #[serde(default)]
    pub tags: Vec<String>,
}

fn scratch() -> Spanned<String> {
    Spanned::new(0..0, "scratch".to_string())
}

/// A port as a number (`8080`) or a string (`"8080/tcp"`, `"53/udp"`). Any integer is read
/// (the range is checked when lowering, so the error names the value and the valid range
/// rather than serde's "did not match any variant of untagged enum").
#[derive(Debug)]
pub enum Port {
    Number(i64),
    Text(String),
}

impl<'de> Deserialize<'de> for Port {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Port, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Port;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a port: a number 1-65535 or a string like \"8080/tcp\"")
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Port, E> {
                Ok(Port::Number(v))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Port, E> {
                Ok(Port::Number(i64::try_from(v).unwrap_or(i64::MAX)))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Port, E> {
                Ok(Port::Text(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

/// A file mode as an integer (`0o644`, `420`) or an octal string (`"0644"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "ModeRepr")]
pub struct Mode(pub u32);

#[derive(Deserialize)]
#[serde(untagged)]
enum ModeRepr {
    Int(i64),
    Text(String),
}

impl TryFrom<ModeRepr> for Mode {
    type Error = String;
    fn try_from(r: ModeRepr) -> Result<Self, String> {
        let v = match r {
            ModeRepr::Int(i) => {
                u32::try_from(i).map_err(|_| format!("mode {i} is out of range"))?
            }
            ModeRepr::Text(s) => u32::from_str_radix(s.trim_start_matches("0o"), 8)
                .map_err(|_| format!("mode {s:?} is not an octal number like \"0644\""))?,
        };
        if v > 0o7777 {
            return Err(format!("mode {v:#o} has bits outside 0o7777"));
        }
        Ok(Mode(v))
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct LayerSection {
    pub name: String,
    pub from: Spanned<String>,
    pub into: Spanned<String>,
    #[serde(default)]
    pub include: Vec<Spanned<String>>,
    #[serde(default)]
    pub exclude: Vec<String>,
    /// Mode of every regular file.
    pub mode: Option<Mode>,
    /// Mode of every directory.
    pub dir_mode: Option<Mode>,
    /// `uid:gid` (numeric).
    pub owner: Option<Spanned<String>>,
    #[serde(default = "yes")]
    pub preserve_exec_bit: bool,
    /// Jib's rule (0644, 0755 when executable, 0755 directories); `false`: the host's bits.
    #[serde(default = "yes")]
    pub normalize_modes: bool,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct JavaSection {
    /// The application jar, relative to the spec.
    pub jar: Option<Spanned<String>>,
    /// A Maven project's `pom.xml`, relative to the spec: laid out as `lade build --maven`
    /// does (instead of `jar`).
    pub maven: Option<Spanned<String>>,
    /// The module of a Maven reactor (with `maven`).
    pub module: Option<String>,
    pub main_class: Option<String>,
    /// `exploded` (Jib's layer split, default) or `jar` (`java -jar`).
    #[serde(default)]
    pub mode: JavaMode,
    /// Where the application goes in the image.
    #[serde(default = "app_root")]
    pub app_root: String,
    #[serde(default)]
    pub jvm_flags: Vec<String>,
    #[serde(default = "java_bin")]
    pub java: String,
}

fn app_root() -> String {
    "/app".to_string()
}

fn java_bin() -> String {
    "java".to_string()
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum JavaMode {
    #[default]
    Exploded,
    Jar,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct CargoSection {
    /// The binary, relative to the spec (`target/release/NAME`).
    pub bin: Spanned<String>,
    /// Directory it goes into.
    #[serde(default = "usr_local_bin")]
    pub into: String,
}

fn usr_local_bin() -> String {
    "/usr/local/bin".to_string()
}

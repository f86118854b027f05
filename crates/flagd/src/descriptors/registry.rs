//! The registry of declared flags: each flag a loaded descriptor set declares, by key, with its
//! type, layer, compiled default and supported values.

use std::collections::BTreeMap;
use std::fmt;

use flags_descriptor::{DefaultValue, Feature};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// The flags a descriptor set declares, by key. Immutable: a new set makes a new registry,
/// swapped in whole by the [`super::DescriptorWatcher`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Registry {
    flags: BTreeMap<String, DeclaredFlag>,
    features: usize,
    /// SHA-256 of the descriptor set's bytes, in hex; empty for the empty registry.
    digest: String,
}

/// One declared flag.
#[derive(Debug, Clone, PartialEq)]
pub struct DeclaredFlag {
    /// The flag key, `{feature}.{field}` as flags-codegen names it (`checkout.max_items`).
    pub key: String,
    /// The field's type.
    pub flag_type: FlagType,
    /// The context kind the flag varies by; `None` for a global flag.
    pub layer: Option<String>,
    /// The compiled default, as the JSON value a variation of the flag holds.
    pub default: Value,
    /// The expected values, as JSON (empty when none are declared).
    pub supported_values: Vec<Value>,
    /// `(flags.flag).description`.
    pub description: String,
    /// The feature message's full name (`shop.Checkout`).
    pub feature: String,
    /// The feature name, the first part of the key (`checkout`).
    pub feature_name: String,
    /// `(flags.feature).owner`.
    pub owner: String,
    /// The `.proto` file that declares it (`shop/flags.proto`).
    pub file: String,
    /// The field's name (`max_items`).
    pub field: String,
}

/// A declared flag's type: the type of its field, which every variation must have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FlagType {
    /// `bool`: JSON `true` or `false`.
    Bool,
    /// `string`: a JSON string.
    String,
    /// `int64`: a whole JSON number within `i64`.
    Int64,
    /// `int32`: a whole JSON number within `i32`.
    Int32,
    /// `double`: a JSON number.
    Double,
    /// `float`: a JSON number within `f32`'s range.
    Float,
}

/// A variation that does not have its flag's declared type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TypeMismatch {
    /// The variation's index.
    pub index: usize,
    /// What is wrong, naming the flag, its declared type and the variation.
    pub message: String,
}

impl TypeMismatch {
    /// The field path of the variation in the flag's document, `variations[1]`.
    pub fn path(&self) -> String {
        format!("variations[{}]", self.index)
    }
}

impl fmt::Display for TypeMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path(), self.message)
    }
}

impl Registry {
    /// The registry of an encoded `google.protobuf.FileDescriptorSet`: every flag of every
    /// file in it. Fails when the bytes are not a set, the set lacks an import, or a
    /// declaration is wrong.
    pub fn from_descriptor_set(bytes: &[u8]) -> Result<Registry, flags_descriptor::Error> {
        let features = flags_descriptor::decode(bytes)?;
        let mut registry = Registry::from_features(&features);
        registry.digest = hex(&Sha256::digest(bytes));
        Ok(registry)
    }

    /// The registry of `features`, as flags-descriptor reads them (their keys unique).
    pub fn from_features(features: &[Feature]) -> Registry {
        let mut flags = BTreeMap::new();
        for feature in features {
            for flag in &feature.flags {
                let declared = DeclaredFlag {
                    key: flag.key.clone(),
                    flag_type: FlagType::of(&flag.default),
                    layer: flag.layer.clone(),
                    default: json_of(&flag.default),
                    supported_values: flag.supported_values.iter().map(json_of).collect(),
                    description: flag.description.clone(),
                    feature: feature.message.clone(),
                    feature_name: feature.name.clone(),
                    owner: feature.owner.clone(),
                    file: feature.file.clone(),
                    field: flag.field.clone(),
                };
                flags.insert(flag.key.clone(), declared);
            }
        }
        Registry {
            flags,
            features: features.len(),
            digest: String::new(),
        }
    }

    /// A registry of `flags` as given, with no descriptor set behind it (so no digest): for
    /// tools and tests that declare flags themselves. A later flag of a key replaces an earlier.
    pub fn from_flags(flags: impl IntoIterator<Item = DeclaredFlag>) -> Registry {
        let flags: BTreeMap<String, DeclaredFlag> =
            flags.into_iter().map(|f| (f.key.clone(), f)).collect();
        let features = flags
            .values()
            .map(|f| f.feature.as_str())
            .collect::<std::collections::BTreeSet<_>>()
            .len();
        Registry {
            flags,
            features,
            digest: String::new(),
        }
    }

    /// The declared flag `key`.
    pub fn get(&self, key: &str) -> Option<&DeclaredFlag> {
        self.flags.get(key)
    }

    /// The compiled default of `key`, when it is declared.
    pub fn compiled_default(&self, key: &str) -> Option<&Value> {
        self.flags.get(key).map(|flag| &flag.default)
    }

    /// Every declared flag, in key order.
    pub fn flags(&self) -> impl ExactSizeIterator<Item = &DeclaredFlag> {
        self.flags.values()
    }

    /// How many flags are declared.
    pub fn len(&self) -> usize {
        self.flags.len()
    }

    /// Whether no flag is declared.
    pub fn is_empty(&self) -> bool {
        self.flags.is_empty()
    }

    /// How many features the flags belong to.
    pub fn feature_count(&self) -> usize {
        self.features
    }

    /// SHA-256 of the descriptor set, in hex (empty for a registry not read from one).
    pub fn digest(&self) -> &str {
        &self.digest
    }

    /// Checks the variations of flag `key` against its declared type: the first that does not
    /// have it, or `Ok` when the flag is not declared.
    pub fn check_variations(&self, key: &str, variations: &[Value]) -> Result<(), TypeMismatch> {
        match self.flags.get(key) {
            Some(flag) => flag.check_variations(variations),
            None => Ok(()),
        }
    }
}

impl DeclaredFlag {
    /// The first variation that does not have the declared type.
    pub fn check_variations(&self, variations: &[Value]) -> Result<(), TypeMismatch> {
        for (index, value) in variations.iter().enumerate() {
            if let Some(why) = self.flag_type.mismatch(value) {
                return Err(TypeMismatch {
                    index,
                    message: format!(
                        "flag {:?} is declared {} (field {}.{} of {}), but variation {index}, \
                         {}, {why}",
                        self.key,
                        self.flag_type.name(),
                        self.feature,
                        self.field,
                        self.file,
                        shown(value),
                    ),
                });
            }
        }
        Ok(())
    }
}

impl FlagType {
    /// The type of a flag whose default is `default`.
    pub fn of(default: &DefaultValue) -> FlagType {
        match default {
            DefaultValue::Bool(_) => FlagType::Bool,
            DefaultValue::String(_) => FlagType::String,
            DefaultValue::Int64(_) => FlagType::Int64,
            DefaultValue::Int32(_) => FlagType::Int32,
            DefaultValue::Double(_) => FlagType::Double,
            DefaultValue::Float(_) => FlagType::Float,
        }
    }

    /// The protobuf name: `bool`, `string`, `int64`, `int32`, `double`, `float`.
    pub fn name(self) -> &'static str {
        match self {
            FlagType::Bool => "bool",
            FlagType::String => "string",
            FlagType::Int64 => "int64",
            FlagType::Int32 => "int32",
            FlagType::Double => "double",
            FlagType::Float => "float",
        }
    }

    /// Reads a name written by [`FlagType::name`].
    pub fn parse(name: &str) -> Option<FlagType> {
        [
            FlagType::Bool,
            FlagType::String,
            FlagType::Int64,
            FlagType::Int32,
            FlagType::Double,
            FlagType::Float,
        ]
        .into_iter()
        .find(|t| t.name() == name)
    }

    /// Why `value` is not a value of this type (`"is not a string"`), or `None` when it is.
    /// Integers must be whole numbers within the type's range (`3.0` is one); floating-point
    /// types take any JSON number, within `f32`'s range for `float`.
    pub fn mismatch(self, value: &Value) -> Option<String> {
        let Value::Number(number) = value else {
            return match (self, value) {
                (FlagType::Bool, Value::Bool(_)) | (FlagType::String, Value::String(_)) => None,
                (FlagType::Bool, _) => Some("is not a boolean".to_owned()),
                (FlagType::String, _) => Some("is not a string".to_owned()),
                _ => Some("is not a number".to_owned()),
            };
        };
        let (min, max) = match self {
            FlagType::Bool => return Some("is not a boolean".to_owned()),
            FlagType::String => return Some("is not a string".to_owned()),
            FlagType::Double => return None,
            FlagType::Float => {
                let fits = number
                    .as_f64()
                    .is_some_and(|v| v.abs() <= f64::from(f32::MAX));
                return (!fits).then(|| "is outside float's range".to_owned());
            }
            FlagType::Int64 => (i64::MIN, i64::MAX),
            FlagType::Int32 => (i64::from(i32::MIN), i64::from(i32::MAX)),
        };
        let out_of_range = || Some(format!("is outside {}'s range", self.name()));
        let whole = match (number.as_i64(), number.as_u64(), number.as_f64()) {
            (Some(v), _, _) => v,
            // Whole, but past i64::MAX.
            (None, Some(_), _) => return out_of_range(),
            (None, None, Some(v)) if v.fract() != 0.0 || !v.is_finite() => {
                return Some("is not a whole number".to_owned());
            }
            // 2^63 is exactly representable, and every whole f64 below it in magnitude
            // converts to i64 exactly.
            (None, None, Some(v)) if v.abs() < 9_223_372_036_854_775_808.0 => {
                #[allow(clippy::cast_possible_truncation)]
                let exact = v as i64;
                exact
            }
            _ => return out_of_range(),
        };
        if (min..=max).contains(&whole) {
            None
        } else {
            out_of_range()
        }
    }
}

/// The compiled default as a variation's JSON value. A `float` default becomes the shortest
/// decimal that reads back as the same `f32` (`0.1`, not `0.10000000149011612`), as a person
/// wrote it.
pub fn json_of(default: &DefaultValue) -> Value {
    match default {
        DefaultValue::Bool(v) => Value::Bool(*v),
        DefaultValue::String(v) => Value::String(v.clone()),
        DefaultValue::Int64(v) => Value::from(*v),
        DefaultValue::Int32(v) => Value::from(*v),
        DefaultValue::Double(v) => Value::from(*v),
        DefaultValue::Float(v) => {
            let shortest: f64 = v.to_string().parse().unwrap_or(f64::from(*v));
            Value::from(shortest)
        }
    }
}

/// A variation as the refusal shows it: its JSON, cut short when long.
fn shown(value: &Value) -> String {
    let text = value.to_string();
    if text.chars().count() <= 40 {
        return text;
    }
    let cut: String = text.chars().take(37).collect();
    format!("{cut}...")
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::with_capacity(64), |mut out, b| {
        // Writing into a String cannot fail.
        let _ = write!(out, "{b:02x}");
        out
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// Each value against each type: `None` where it is one, else the start of the message.
    #[test]
    fn values_have_a_type_or_say_why_not() {
        let check = |flag_type: FlagType, value: Value, expected: Option<&str>| {
            let found = flag_type.mismatch(&value);
            assert_eq!(
                found.as_deref(),
                expected,
                "{value} as {}",
                flag_type.name()
            );
        };
        use FlagType::*;
        check(Bool, json!(true), None);
        check(Bool, json!("true"), Some("is not a boolean"));
        check(Bool, json!(1), Some("is not a boolean"));
        check(String, json!(""), None);
        check(String, json!(null), Some("is not a string"));
        check(Int64, json!(-3), None);
        check(Int64, json!(3.0), None);
        check(Int64, json!(-9_223_372_036_854_775_808_i64), None);
        check(
            Int64,
            json!(9_223_372_036_854_775_808_u64),
            Some("is outside int64's range"),
        );
        check(Int64, json!(1e19), Some("is outside int64's range"));
        check(Int64, json!(2.5), Some("is not a whole number"));
        check(Int64, json!("3"), Some("is not a number"));
        check(Int64, json!(true), Some("is not a number"));
        check(Int32, json!(2_147_483_647), None);
        check(Int32, json!(-2_147_483_648_i64), None);
        check(
            Int32,
            json!(2_147_483_648_i64),
            Some("is outside int32's range"),
        );
        check(Int32, json!(1e3), None);
        check(Double, json!(2.5), None);
        check(Double, json!(1e300), None);
        check(Double, json!(7), None);
        check(Double, json!([7]), Some("is not a number"));
        check(Float, json!(0.1), None);
        check(Float, json!(-3.4e38), None);
        check(Float, json!(1e39), Some("is outside float's range"));
        check(Float, json!({}), Some("is not a number"));
    }

    #[test]
    fn names_read_back() {
        for flag_type in [
            FlagType::Bool,
            FlagType::String,
            FlagType::Int64,
            FlagType::Int32,
            FlagType::Double,
            FlagType::Float,
        ] {
            assert_eq!(FlagType::parse(flag_type.name()), Some(flag_type));
        }
        assert_eq!(FlagType::parse("int"), None);
    }

    #[test]
    fn defaults_are_the_json_a_person_writes() {
        assert_eq!(json_of(&DefaultValue::Float(0.1)), json!(0.1));
        assert_eq!(json_of(&DefaultValue::Float(-2.5)), json!(-2.5));
        assert_eq!(json_of(&DefaultValue::Double(0.1)), json!(0.1));
        assert_eq!(json_of(&DefaultValue::Int32(-7)), json!(-7));
        assert_eq!(json_of(&DefaultValue::String("a".into())), json!("a"));
    }

    #[test]
    fn a_mismatch_names_the_flag_its_type_and_the_variation() {
        let registry = Registry::from_flags([DeclaredFlag {
            key: "checkout.max_items".to_owned(),
            flag_type: FlagType::Int64,
            layer: None,
            default: json!(50),
            supported_values: Vec::new(),
            description: String::new(),
            feature: "shop.Checkout".to_owned(),
            feature_name: "checkout".to_owned(),
            owner: String::new(),
            file: "shop/flags.proto".to_owned(),
            field: "max_items".to_owned(),
        }]);
        assert_eq!(
            registry.check_variations("checkout.max_items", &[json!(1), json!(2.0)]),
            Ok(())
        );
        assert_eq!(
            registry.check_variations("undeclared", &[json!("x")]),
            Ok(())
        );
        let mismatch = registry
            .check_variations("checkout.max_items", &[json!(1), json!("fifty")])
            .unwrap_err();
        assert_eq!(
            mismatch.to_string(),
            "variations[1]: flag \"checkout.max_items\" is declared int64 (field \
             shop.Checkout.max_items of shop/flags.proto), but variation 1, \"fifty\", is not a \
             number"
        );
        let long = json!("x".repeat(100));
        let mismatch = registry
            .check_variations("checkout.max_items", &[long])
            .unwrap_err();
        assert!(
            mismatch
                .message
                .contains(&format!("\"{}...", "x".repeat(36))),
            "{mismatch}"
        );
    }
}

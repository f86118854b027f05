//! The flags a set of `.proto` files declares, read from the compiled descriptors and checked.

use std::collections::BTreeMap;

use heck::ToSnakeCase;
use prost_reflect::{
    DescriptorPool, DynamicMessage, FieldDescriptor, Kind, MessageDescriptor, ReflectMessage, Value,
};

use crate::{Error, Problem};

/// The longest flag key flagd stores.
pub const MAX_KEY_LEN: usize = 256;

/// A feature: a message marked with `(flags.feature)`.
#[derive(Debug, Clone, PartialEq)]
pub struct Feature {
    /// The message's full name, `example.Notifications`.
    pub message: String,
    /// The file that declares it, `example/notifications.proto`.
    pub file: String,
    /// The feature name: the message name in snake case (`notifications`), the first part of
    /// each of its flags' keys.
    pub name: String,
    /// `(flags.feature).display_name`.
    pub display_name: String,
    /// `(flags.feature).description`.
    pub description: String,
    /// `(flags.feature).owner`.
    pub owner: String,
    /// The message's leading comment.
    pub comment: String,
    /// Its flags: the fields marked with `(flags.flag)`, in field order.
    pub flags: Vec<Flag>,
}

impl Feature {
    /// The message's own name (`Notifications` of `example.Notifications`).
    pub fn message_name(&self) -> &str {
        self.message.rsplit('.').next().unwrap_or(&self.message)
    }
}

/// A flag: a field of a feature marked with `(flags.flag)`.
#[derive(Debug, Clone, PartialEq)]
pub struct Flag {
    /// The field's name, `email_enabled`.
    pub field: String,
    /// The flag key: `{feature}.{field}`, `notifications.email_enabled`.
    pub key: String,
    /// The compiled default, of the field's type.
    pub default: DefaultValue,
    /// The context kind the flag varies by, `None` for a global flag.
    pub layer: Option<String>,
    /// `(flags.flag).description`.
    pub description: String,
    /// The expected values, as the default's type (empty when none are given).
    pub supported_values: Vec<DefaultValue>,
    /// The field's leading comment.
    pub comment: String,
}

/// A flag's compiled default, which also says the flag's type.
#[derive(Debug, Clone, PartialEq)]
pub enum DefaultValue {
    /// A `bool` flag.
    Bool(bool),
    /// A `string` flag.
    String(String),
    /// An `int64` flag.
    Int64(i64),
    /// An `int32` flag.
    Int32(i32),
    /// A `double` flag.
    Double(f64),
    /// A `float` flag.
    Float(f32),
}

impl DefaultValue {
    /// The protobuf name of the type.
    pub fn type_name(&self) -> &'static str {
        match self {
            DefaultValue::Bool(_) => "bool",
            DefaultValue::String(_) => "string",
            DefaultValue::Int64(_) => "int64",
            DefaultValue::Int32(_) => "int32",
            DefaultValue::Double(_) => "double",
            DefaultValue::Float(_) => "float",
        }
    }
}

/// The flag key of field `field` of feature `feature`: `{feature}.{field}`. Both parts are
/// protobuf identifiers (ASCII letters, digits and `_`), so the key is a valid LaunchDarkly flag
/// key (`[A-Za-z0-9._-]+`) as long as it is at most [`MAX_KEY_LEN`] long.
pub fn flag_key(feature: &str, field: &str) -> String {
    format!("{feature}.{field}")
}

/// The features declared in `files` (names as imports give them) of `pool`, in file order
/// and then message order (nested messages after their parent), with every problem found in
/// their declarations.
pub fn features(pool: &DescriptorPool, files: &[String]) -> Result<Vec<Feature>, Error> {
    let mut problems = Vec::new();
    let mut features = Vec::new();
    let Some(feature_ext) = pool.get_extension_by_name("flags.feature") else {
        // Nothing imports flags/options.proto, so nothing is a feature.
        return Ok(features);
    };
    let flag_ext = pool.get_extension_by_name("flags.flag");
    for name in files {
        let Some(file) = pool.get_file_by_name(name) else {
            continue;
        };
        // Depth first: each message, then the messages nested in it, then the next one.
        let mut stack: Vec<MessageDescriptor> = file.messages().collect();
        stack.reverse();
        while let Some(message) = stack.pop() {
            let nested: Vec<_> = message.child_messages().collect();
            stack.extend(nested.into_iter().rev());
            let options = message.options();
            if !options.has_extension(&feature_ext) {
                continue;
            }
            let feature_options = as_message(&options.get_extension(&feature_ext));
            let mut feature = Feature {
                message: message.full_name().to_owned(),
                file: name.clone(),
                name: message.name().to_snake_case(),
                display_name: string_field(feature_options.as_ref(), "display_name"),
                description: string_field(feature_options.as_ref(), "description"),
                owner: string_field(feature_options.as_ref(), "owner"),
                comment: comment(
                    &message.parent_file_descriptor_proto().source_code_info,
                    message.path(),
                ),
                flags: Vec::new(),
            };
            for field in message.fields() {
                let Some(flag_ext) = &flag_ext else { break };
                let field_options = field.options();
                if !field_options.has_extension(flag_ext) {
                    continue;
                }
                let flag_options = as_message(&field_options.get_extension(flag_ext));
                let at = format!("{name}: {}", field.full_name());
                match flag(&feature.name, &field, flag_options.as_ref()) {
                    Ok(flag) => feature.flags.push(flag),
                    Err(message) => problems.push(Problem { at, message }),
                }
            }
            features.push(feature);
        }
    }
    check_unique(&features, &mut problems);
    if problems.is_empty() {
        Ok(features)
    } else {
        Err(Error::Declaration(problems))
    }
}

/// Two features with one name would give flags one key, and one generated type name.
fn check_unique(features: &[Feature], problems: &mut Vec<Problem>) {
    let mut seen: BTreeMap<&str, &Feature> = BTreeMap::new();
    for feature in features {
        if let Some(first) = seen.insert(&feature.name, feature) {
            problems.push(Problem {
                at: format!("{}: {}", feature.file, feature.message),
                message: format!(
                    "feature name `{}` is also the name of {} ({}); flag keys would collide: \
                     rename one of the messages",
                    feature.name, first.message, first.file
                ),
            });
        }
    }
}

/// One flag, or what is wrong with its declaration.
fn flag(
    feature: &str,
    field: &FieldDescriptor,
    options: Option<&DynamicMessage>,
) -> Result<Flag, String> {
    if field.is_list() || field.is_map() {
        return Err("a flag is one value: repeated and map fields cannot be flags".to_owned());
    }
    let zero = match field.kind() {
        Kind::Bool => DefaultValue::Bool(false),
        Kind::String => DefaultValue::String(String::new()),
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => DefaultValue::Int64(0),
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => DefaultValue::Int32(0),
        Kind::Double => DefaultValue::Double(0.0),
        Kind::Float => DefaultValue::Float(0.0),
        other => {
            return Err(format!(
                "a flag is a bool, string, int64, int32, double or float field, not {}",
                kind_name(&other)
            ));
        }
    };
    let default = match options.and_then(|o| message_field(o, "default")) {
        Some(default) => read_default(&default, &zero)?,
        None => zero,
    };
    let layer = options
        .map(|o| string_field(Some(o), "layer"))
        .unwrap_or_default();
    let layer = match layer.as_str() {
        "" | "global" => None,
        kind => {
            check_kind(kind)?;
            Some(kind.to_owned())
        }
    };
    let supported_values = options
        .and_then(|o| message_field(o, "supported_values"))
        .map(|values| read_supported(&values, &default))
        .unwrap_or_default();
    let has_default = options.is_some_and(|o| o.has_field_by_name("default"));
    if has_default && !supported_values.is_empty() && !supported_values.contains(&default) {
        return Err(format!(
            "the default {} is not one of the supported values",
            show(&default)
        ));
    }
    let key = flag_key(feature, field.name());
    if key.len() > MAX_KEY_LEN {
        return Err(format!(
            "the flag key `{key}` is longer than {MAX_KEY_LEN} characters: shorten the message \
             or field name"
        ));
    }
    Ok(Flag {
        field: field.name().to_owned(),
        key,
        default,
        layer,
        description: options
            .map(|o| string_field(Some(o), "description"))
            .unwrap_or_default(),
        supported_values,
        comment: comment(
            &field
                .parent_message()
                .parent_file_descriptor_proto()
                .source_code_info,
            field.path(),
        ),
    })
}

/// The default in a `FlagDefault`, which must be of the flag's type (`zero` is that type's
/// zero value).
fn read_default(default: &DynamicMessage, zero: &DefaultValue) -> Result<DefaultValue, String> {
    let set = default
        .descriptor()
        .fields()
        .find(|field| default.has_field(field));
    let Some(field) = set else {
        return Ok(zero.clone());
    };
    let wrapped = default.get_field(&field);
    let value = as_message(&wrapped)
        .and_then(|wrapper| wrapper.get_field_by_name("value").map(|v| v.into_owned()));
    let read = match (field.name(), value) {
        ("bool_value", Some(Value::Bool(v))) => DefaultValue::Bool(v),
        ("string_value", Some(Value::String(v))) => DefaultValue::String(v),
        ("int64_value", Some(Value::I64(v))) => DefaultValue::Int64(v),
        ("int32_value", Some(Value::I32(v))) => DefaultValue::Int32(v),
        ("double_value", Some(Value::F64(v))) => DefaultValue::Double(v),
        ("float_value", Some(Value::F32(v))) => DefaultValue::Float(v),
        (name, _) => return Err(format!("the default's `{name}` cannot be read")),
    };
    if std::mem::discriminant(&read) != std::mem::discriminant(zero) {
        return Err(format!(
            "the flag is a {} field, so its default is `{}_value`, not `{}`",
            zero.type_name(),
            zero.type_name(),
            field.name()
        ));
    }
    let finite = match read {
        DefaultValue::Double(v) => v.is_finite(),
        DefaultValue::Float(v) => v.is_finite(),
        _ => true,
    };
    if !finite {
        return Err("the default is not a finite number, which JSON cannot hold".to_owned());
    }
    Ok(read)
}

/// The supported values of the flag's type; the other lists are ignored.
fn read_supported(values: &DynamicMessage, default: &DefaultValue) -> Vec<DefaultValue> {
    let list = |name: &str| -> Vec<Value> {
        match values.get_field_by_name(name).as_deref() {
            Some(Value::List(items)) => items.clone(),
            _ => Vec::new(),
        }
    };
    match default {
        DefaultValue::Bool(_) => Vec::new(),
        DefaultValue::String(_) => list("string_values")
            .into_iter()
            .filter_map(|v| match v {
                Value::String(s) => Some(DefaultValue::String(s)),
                _ => None,
            })
            .collect(),
        DefaultValue::Int64(_) => int_list(list("int64_values"))
            .map(DefaultValue::Int64)
            .collect(),
        DefaultValue::Int32(_) => int_list(list("int64_values"))
            .filter_map(|v| i32::try_from(v).ok().map(DefaultValue::Int32))
            .collect(),
        DefaultValue::Double(_) => float_list(list("double_values"))
            .map(DefaultValue::Double)
            .collect(),
        DefaultValue::Float(_) => float_list(list("double_values"))
            .map(|v| {
                // A supported value of a float flag is written as a double; compared as the
                // float it becomes.
                #[allow(clippy::cast_possible_truncation)]
                DefaultValue::Float(v as f32)
            })
            .collect(),
    }
}

fn int_list(values: Vec<Value>) -> impl Iterator<Item = i64> {
    values.into_iter().filter_map(|v| v.as_i64())
}

fn float_list(values: Vec<Value>) -> impl Iterator<Item = f64> {
    values.into_iter().filter_map(|v| v.as_f64())
}

/// LaunchDarkly's rule for a context kind, which a layer must follow.
fn check_kind(kind: &str) -> Result<(), String> {
    let valid = kind
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        && kind != "kind"
        && kind != "multi";
    if valid {
        Ok(())
    } else {
        Err(format!(
            "layer {kind:?} is not a context kind: use letters, digits, '.', '_' and '-', and \
             neither \"kind\" nor \"multi\" (or leave it empty for a global flag)"
        ))
    }
}

fn show(value: &DefaultValue) -> String {
    match value {
        DefaultValue::Bool(v) => v.to_string(),
        DefaultValue::String(v) => format!("{v:?}"),
        DefaultValue::Int64(v) => v.to_string(),
        DefaultValue::Int32(v) => v.to_string(),
        DefaultValue::Double(v) => v.to_string(),
        DefaultValue::Float(v) => v.to_string(),
    }
}

fn kind_name(kind: &Kind) -> String {
    match kind {
        Kind::Message(message) => format!("message {}", message.full_name()),
        Kind::Enum(e) => format!("enum {}", e.full_name()),
        other => format!("{other:?}").to_lowercase(),
    }
}

/// A message value as a message.
fn as_message(value: &Value) -> Option<DynamicMessage> {
    match value {
        Value::Message(message) => Some(message.clone()),
        _ => None,
    }
}

/// A message field of `message`, when it is set.
fn message_field(message: &DynamicMessage, name: &str) -> Option<DynamicMessage> {
    if !message.has_field_by_name(name) {
        return None;
    }
    as_message(&*message.get_field_by_name(name)?)
}

/// A string field of `message`, empty when unset.
fn string_field(message: Option<&DynamicMessage>, name: &str) -> String {
    message
        .and_then(|m| m.get_field_by_name(name))
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// The leading comment of the element at `path`, trimmed, one line per comment line.
fn comment(info: &Option<prost_types::SourceCodeInfo>, path: &[i32]) -> String {
    let Some(info) = info else {
        return String::new();
    };
    info.location
        .iter()
        .find(|location| location.path == path)
        .and_then(|location| location.leading_comments.as_deref())
        .map(|text| {
            text.lines()
                .map(|line| line.strip_prefix(' ').unwrap_or(line).trim_end())
                .collect::<Vec<_>>()
                .join("\n")
                .trim()
                .to_owned()
        })
        .unwrap_or_default()
}

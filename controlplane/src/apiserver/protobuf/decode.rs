//! The protobuf wire format, read against the generated schema table: a message's bytes
//! become the JSON object Kubernetes would have written for the same Go value.

use base64::Engine;
use jiff::Timestamp;
use serde_json::{Map, Value, json};

use super::ProtobufError;
use super::schema::MESSAGES;

/// How a field is encoded and what JSON it becomes.
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    /// `string`.
    Str,
    /// `bool`.
    Bool,
    /// `int32` (negative values are 10-byte varints).
    I32,
    /// `int64`.
    I64,
    /// `bytes`: base64 in JSON.
    Bytes,
    /// A message, by its index in `MESSAGES`.
    Msg(usize),
    /// `map<string, string>`.
    MapStr,
    /// `map<string, bytes>`: base64 values.
    MapBytes,
    /// `map<string, message>`.
    MapMsg(usize),
}

/// Messages with their own JSON form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Special {
    /// An object of its fields.
    None,
    /// `metav1.Time`: RFC 3339 with seconds; empty is null.
    Time,
    /// `metav1.MicroTime`: RFC 3339 with microseconds.
    MicroTime,
    /// `resource.Quantity`: its string.
    Quantity,
    /// `intstr.IntOrString`: a number or a string.
    IntOrString,
    /// `FieldsV1`, `RawExtension`: raw JSON bytes.
    RawJson,
}

/// One field of a message.
#[derive(Debug)]
pub struct Field {
    /// The field number.
    pub tag: u32,
    /// The JSON name; empty for an embedded Go struct whose fields are inlined.
    pub json: &'static str,
    /// The encoding.
    pub kind: Kind,
    /// A JSON array.
    pub repeated: bool,
    /// Keep a zero scalar (a required field, or a Go pointer whose zero means something).
    pub keep_zero: bool,
}

/// One message type.
#[derive(Debug)]
pub struct Message {
    /// `module::Name` in k8s-pb, for error messages.
    pub name: &'static str,
    /// A message with its own JSON form.
    pub special: Special,
    /// Its fields.
    pub fields: &'static [Field],
}

/// Nesting deeper than this is refused (no served type comes close).
const MAX_DEPTH: usize = 64;

/// A field's raw value on the wire (fixed-width values are skipped: no served type has
/// one).
#[derive(Debug, Clone, Copy)]
pub enum Wire<'a> {
    Varint(u64),
    Fixed64,
    Bytes(&'a [u8]),
    Fixed32,
}

/// Reads the fields of one message in order.
pub struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf }
    }

    fn varint(&mut self) -> Result<u64, ProtobufError> {
        let mut value = 0u64;
        for i in 0..10 {
            let (&byte, rest) = self
                .buf
                .split_first()
                .ok_or_else(|| ProtobufError::new("truncated varint"))?;
            self.buf = rest;
            value |= u64::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(ProtobufError::new("varint longer than 10 bytes"))
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], ProtobufError> {
        if self.buf.len() < n {
            return Err(ProtobufError::new("truncated field"));
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    /// The next `(field number, value)`, or `None` at the end.
    pub fn next_field(&mut self) -> Result<Option<(u32, Wire<'a>)>, ProtobufError> {
        if self.buf.is_empty() {
            return Ok(None);
        }
        let key = self.varint()?;
        let tag = u32::try_from(key >> 3)
            .ok()
            .filter(|t| *t > 0)
            .ok_or_else(|| ProtobufError::new("invalid field number"))?;
        let value = match key & 7 {
            0 => Wire::Varint(self.varint()?),
            1 => {
                self.take(8)?;
                Wire::Fixed64
            }
            2 => {
                let len = usize::try_from(self.varint()?)
                    .map_err(|_| ProtobufError::new("length out of range"))?;
                Wire::Bytes(self.take(len)?)
            }
            5 => {
                self.take(4)?;
                Wire::Fixed32
            }
            other => {
                return Err(ProtobufError::new(format!(
                    "unsupported wire type {other} of field {tag}"
                )));
            }
        };
        Ok(Some((tag, value)))
    }
}

fn bytes_of<'a>(wire: Wire<'a>, what: &str) -> Result<&'a [u8], ProtobufError> {
    match wire {
        Wire::Bytes(b) => Ok(b),
        _ => Err(ProtobufError::new(format!(
            "{what}: expected a length-delimited value"
        ))),
    }
}

fn varint_of(wire: Wire<'_>, what: &str) -> Result<u64, ProtobufError> {
    match wire {
        Wire::Varint(v) => Ok(v),
        _ => Err(ProtobufError::new(format!("{what}: expected a varint"))),
    }
}

/// A UTF-8 string field.
pub fn string_of(wire: Wire<'_>, what: &str) -> Result<String, ProtobufError> {
    let bytes = bytes_of(wire, what)?;
    String::from_utf8(bytes.to_vec())
        .map_err(|_| ProtobufError::new(format!("{what}: invalid UTF-8")))
}

fn base64(bytes: &[u8]) -> Value {
    Value::String(base64::engine::general_purpose::STANDARD.encode(bytes))
}

/// One scalar value as JSON.
fn scalar(kind: Kind, wire: Wire<'_>, what: &str) -> Result<Value, ProtobufError> {
    Ok(match kind {
        Kind::Str => Value::String(string_of(wire, what)?),
        Kind::Bool => Value::Bool(varint_of(wire, what)? != 0),
        // Truncation to 32 bits is how protobuf decodes an int32.
        Kind::I32 => json!(varint_of(wire, what)? as i64 as i32),
        Kind::I64 => json!(varint_of(wire, what)? as i64),
        Kind::Bytes => base64(bytes_of(wire, what)?),
        _ => unreachable!("scalar() is only called for scalar kinds"),
    })
}

fn is_zero(value: &Value) -> bool {
    match value {
        Value::String(s) => s.is_empty(),
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_i64() == Some(0),
        Value::Null => true,
        _ => false,
    }
}

/// The values of a repeated scalar: packed (one length-delimited run) or one per field.
fn repeated_scalars(kind: Kind, wire: Wire<'_>, what: &str) -> Result<Vec<Value>, ProtobufError> {
    match (kind, wire) {
        (Kind::Bool | Kind::I32 | Kind::I64, Wire::Bytes(run)) => {
            let mut reader = Reader::new(run);
            let mut out = Vec::new();
            while !reader.buf.is_empty() {
                out.push(scalar(kind, Wire::Varint(reader.varint()?), what)?);
            }
            Ok(out)
        }
        _ => Ok(vec![scalar(kind, wire, what)?]),
    }
}

/// A map entry: key (field 1) and value (field 2).
fn map_entry<'a>(bytes: &'a [u8], what: &str) -> Result<(String, Option<Wire<'a>>), ProtobufError> {
    let mut reader = Reader::new(bytes);
    let (mut key, mut value) = (String::new(), None);
    while let Some((tag, wire)) = reader.next_field()? {
        match tag {
            1 => key = string_of(wire, what)?,
            2 => value = Some(wire),
            _ => {}
        }
    }
    Ok((key, value))
}

fn time(seconds: i64, micros: Option<i64>, what: &str) -> Result<Value, ProtobufError> {
    let nanos = micros.unwrap_or(0) * 1000;
    let ts = Timestamp::new(seconds, i32::try_from(nanos).unwrap_or(0))
        .map_err(|_| ProtobufError::new(format!("{what}: time out of range")))?;
    let format = if micros.is_some() {
        "%Y-%m-%dT%H:%M:%S%.6fZ"
    } else {
        "%Y-%m-%dT%H:%M:%SZ"
    };
    Ok(Value::String(ts.strftime(format).to_string()))
}

/// The JSON of a special message; `Null` when it is empty (a zero Go value).
fn special(special: Special, bytes: &[u8], what: &str) -> Result<Value, ProtobufError> {
    let mut reader = Reader::new(bytes);
    let mut fields: [Option<Wire<'_>>; 4] = [None; 4];
    while let Some((tag, wire)) = reader.next_field()? {
        if let Some(slot) = fields.get_mut(tag as usize) {
            *slot = Some(wire);
        }
    }
    let int = |i: usize| -> Result<Option<i64>, ProtobufError> {
        fields[i]
            .map(|w| varint_of(w, what).map(|v| v as i64))
            .transpose()
    };
    match special {
        Special::Time | Special::MicroTime => {
            let Some(seconds) = int(1)? else {
                return Ok(Value::Null);
            };
            let micros = (special == Special::MicroTime)
                .then(|| int(2))
                .transpose()?;
            time(seconds, micros.map(|n| n.unwrap_or(0) / 1000), what)
        }
        Special::Quantity => {
            fields[1].map_or(Ok(Value::Null), |w| string_of(w, what).map(Value::String))
        }
        Special::IntOrString => match int(1)? {
            Some(1) => Ok(Value::String(
                fields[3]
                    .map(|w| string_of(w, what))
                    .transpose()?
                    .unwrap_or_default(),
            )),
            _ => Ok(json!(int(2)?.unwrap_or(0) as i32)),
        },
        Special::RawJson => match fields[1] {
            None => Ok(Value::Null),
            Some(w) => serde_json::from_slice(bytes_of(w, what)?)
                .map_err(|_| ProtobufError::new(format!("{what}: raw bytes are not JSON"))),
        },
        Special::None => unreachable!("special() is only called for special messages"),
    }
}

/// The JSON of a message field's value.
fn message_value(index: usize, bytes: &[u8], depth: usize) -> Result<Value, ProtobufError> {
    let message = &MESSAGES[index];
    match message.special {
        Special::None => Ok(Value::Object(message_object(index, bytes, depth + 1)?)),
        s => special(s, bytes, message.name),
    }
}

/// Decodes the message `MESSAGES[index]` into a JSON object.
pub fn message_object(
    index: usize,
    bytes: &[u8],
    depth: usize,
) -> Result<Map<String, Value>, ProtobufError> {
    if depth > MAX_DEPTH {
        return Err(ProtobufError::new("message nested too deeply"));
    }
    let message = &MESSAGES[index];
    let mut out = Map::new();
    let mut reader = Reader::new(bytes);
    while let Some((tag, wire)) = reader.next_field()? {
        // Unknown field numbers (newer fields) are skipped, as protobuf does.
        let Some(field) = message.fields.iter().find(|f| f.tag == tag) else {
            continue;
        };
        let what = field.json;
        let in_field = |e: ProtobufError| e.within(message.name, field.json);
        match field.kind {
            Kind::Msg(sub) if field.json.is_empty() => {
                let inner =
                    message_object(sub, bytes_of(wire, what)?, depth + 1).map_err(in_field)?;
                out.extend(inner);
            }
            Kind::Msg(sub) => {
                let value = message_value(sub, bytes_of(wire, what)?, depth).map_err(in_field)?;
                if field.repeated {
                    push(&mut out, what, vec![value]);
                } else if value.is_null() || (!field.keep_zero && is_zero(&value)) {
                    out.remove(what);
                } else {
                    out.insert(what.into(), value);
                }
            }
            Kind::MapStr | Kind::MapBytes | Kind::MapMsg(_) => {
                let (key, value) = map_entry(bytes_of(wire, what)?, what).map_err(in_field)?;
                let value = match (field.kind, value) {
                    (_, None) => Value::Null,
                    (Kind::MapStr, Some(w)) => Value::String(string_of(w, what)?),
                    (Kind::MapBytes, Some(w)) => base64(bytes_of(w, what)?),
                    (Kind::MapMsg(sub), Some(w)) => {
                        message_value(sub, bytes_of(w, what)?, depth).map_err(in_field)?
                    }
                    _ => Value::Null,
                };
                let map = out.entry(what).or_insert_with(|| json!({}));
                if let Some(map) = map.as_object_mut() {
                    map.insert(key, value);
                }
            }
            kind if field.repeated => {
                let values = repeated_scalars(kind, wire, what).map_err(in_field)?;
                push(&mut out, what, values);
            }
            kind => {
                let value = scalar(kind, wire, what).map_err(in_field)?;
                if !field.keep_zero && is_zero(&value) {
                    out.remove(what);
                } else {
                    out.insert(what.into(), value);
                }
            }
        }
    }
    Ok(out)
}

fn push(out: &mut Map<String, Value>, key: &str, values: Vec<Value>) {
    let list = out.entry(key).or_insert_with(|| json!([]));
    if let Some(list) = list.as_array_mut() {
        list.extend(values);
    }
}

//! The map layout is defined once (bpf/skiff_lb.h): this test reads the compiled object's BTF
//! and checks that every struct user space mirrors has the same size and field offsets.

use std::collections::HashMap;

use object::{Object, ObjectSection};

/// One BTF struct: size and (member name, byte offset).
#[derive(Debug)]
struct BtfStruct {
    size: usize,
    members: Vec<(String, usize)>,
}

fn u32_at(data: &[u8], off: usize) -> u32 {
    u32::from_le_bytes(data[off..off + 4].try_into().expect("4 bytes"))
}

fn name_at(strings: &[u8], off: usize) -> String {
    let end = strings[off..].iter().position(|&b| b == 0).expect("NUL") + off;
    String::from_utf8_lossy(&strings[off..end]).into_owned()
}

/// Every named struct of a .BTF section (kernel BTF format, little endian).
fn structs(btf: &[u8]) -> HashMap<String, BtfStruct> {
    assert_eq!(u16::from_le_bytes([btf[0], btf[1]]), 0xeb9f, "BTF magic");
    let hdr_len = u32_at(btf, 4) as usize;
    let (type_off, type_len) = (u32_at(btf, 8) as usize, u32_at(btf, 12) as usize);
    let (str_off, str_len) = (u32_at(btf, 16) as usize, u32_at(btf, 20) as usize);
    let types = &btf[hdr_len + type_off..hdr_len + type_off + type_len];
    let strings = &btf[hdr_len + str_off..hdr_len + str_off + str_len];
    let mut out = HashMap::new();
    let mut at = 0;
    while at < types.len() {
        let name_off = u32_at(types, at) as usize;
        let info = u32_at(types, at + 4);
        let size = u32_at(types, at + 8) as usize;
        let (vlen, kind, kind_flag) = ((info & 0xffff) as usize, (info >> 24) & 0x1f, info >> 31);
        at += 12;
        let extra = match kind {
            1 | 14 | 17 => 4,     // INT, VAR, DECL_TAG
            3 => 12,              // ARRAY
            4 | 5 => 12 * vlen,   // STRUCT, UNION
            6 | 13 => 8 * vlen,   // ENUM, FUNC_PROTO
            15 | 19 => 12 * vlen, // DATASEC, ENUM64
            _ => 0,               // PTR, FWD, TYPEDEF, qualifiers, FUNC, FLOAT, TYPE_TAG
        };
        if kind == 4 && name_off != 0 {
            let members = (0..vlen)
                .map(|i| {
                    let m = at + 12 * i;
                    let bits = u32_at(types, m + 8);
                    let bit_offset = if kind_flag == 1 {
                        bits & 0xff_ffff
                    } else {
                        bits
                    };
                    assert_eq!(bit_offset % 8, 0, "no bitfields in the map layout");
                    (
                        name_at(strings, u32_at(types, m) as usize),
                        (bit_offset / 8) as usize,
                    )
                })
                .collect();
            out.insert(name_at(strings, name_off), BtfStruct { size, members });
        }
        at += extra;
    }
    out
}

#[test]
fn rust_mirrors_match_the_objects_btf() {
    let elf = object::File::parse(skiff_ebpf::OBJECT).expect("parse the BPF object");
    let btf = elf
        .section_by_name(".BTF")
        .expect("the object has BTF (built with -g)")
        .data()
        .expect(".BTF data");
    let found = structs(btf);
    assert!(!skiff_ebpf::LAYOUTS.is_empty());
    for layout in skiff_ebpf::LAYOUTS {
        let s = found
            .get(layout.name)
            .unwrap_or_else(|| panic!("struct {} is not in the object's BTF", layout.name));
        assert_eq!(s.size, layout.size, "size of struct {}", layout.name);
        let rust: Vec<(String, usize)> = layout
            .fields
            .iter()
            .map(|(name, off)| (name.to_string(), *off))
            .collect();
        assert_eq!(s.members, rust, "fields of struct {}", layout.name);
    }
}

#[test]
fn the_object_has_every_map_and_program() {
    let elf = object::File::parse(skiff_ebpf::OBJECT).expect("parse the BPF object");
    let symbols: Vec<String> = elf
        .symbols()
        .filter_map(|s| object::ObjectSymbol::name(&s).ok().map(str::to_owned))
        .collect();
    let programs = skiff_ebpf::programs::ALL;
    for name in skiff_ebpf::maps::ALL.iter().chain(programs.iter()) {
        assert!(
            symbols.iter().any(|s| s == name),
            "{name} missing from the object"
        );
    }
}

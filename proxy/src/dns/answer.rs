//! Answers one DNS query from the [`Records`] — pure, so every case is a unit test: A and
//! SRV from memory, a CNAME for ExternalName (with the target's addresses when it is in the
//! cluster too), NODATA and NXDOMAIN with the zone's SOA, and everything outside the
//! cluster domain handed to the upstream resolver.

use std::net::Ipv4Addr;

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::{A, CNAME, SOA, SRV};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};

use super::records::{Lookup, Records};

/// Seconds clients may cache an answer (CoreDNS's kubernetes plugin uses 5 too).
pub const TTL: u32 = 5;

/// What to do with a query.
#[derive(Debug)]
pub enum Outcome {
    /// Send this.
    Reply(Message),
    /// Relay the query to the upstream resolver as it is.
    Forward,
    /// An ExternalName's CNAME whose target lies outside the cluster: send `reply` with the
    /// upstream's answer for `target` (same type) appended.
    Chase {
        reply: Message,
        target: Name,
        query_type: RecordType,
    },
}

fn name(text: &str) -> Option<Name> {
    Name::from_ascii(format!("{text}.")).ok()
}

/// An empty response to `request`: id, opcode, RD and CD copied, the question echoed.
pub fn response_to(request: &Message, code: ResponseCode) -> Message {
    let mut reply = Message::response(request.metadata.id, request.metadata.op_code);
    reply.metadata.recursion_desired = request.metadata.recursion_desired;
    reply.metadata.checking_disabled = request.metadata.checking_disabled;
    reply.metadata.recursion_available = true;
    reply.metadata.response_code = code;
    reply.add_queries(request.queries.iter().cloned());
    reply
}

fn soa(records: &Records) -> Option<Record> {
    let zone = name(records.domain())?;
    let mname = name(&format!("ns.dns.{}", records.domain()))?;
    let rname = name(&format!("hostmaster.{}", records.domain()))?;
    let data = SOA::new(mname, rname, 1, 7200, 1800, 86400, TTL);
    Some(Record::from_rdata(zone, TTL, RData::SOA(data)))
}

fn a_records(owner: &Name, ips: &[Ipv4Addr]) -> impl Iterator<Item = Record> {
    ips.iter()
        .map(move |ip| Record::from_rdata(owner.clone(), TTL, RData::A(A(*ip))))
}

/// The answer to `request` from `records`.
pub fn answer(records: &Records, request: &Message) -> Outcome {
    if request.metadata.message_type != MessageType::Query {
        return Outcome::Reply(response_to(request, ResponseCode::FormErr));
    }
    if request.metadata.op_code != OpCode::Query {
        return Outcome::Reply(response_to(request, ResponseCode::NotImp));
    }
    let [query] = request.queries.as_slice() else {
        return Outcome::Reply(response_to(request, ResponseCode::FormErr));
    };
    let qname = query.name().to_ascii();
    if !records.in_domain(&qname) {
        return Outcome::Forward;
    }
    if !matches!(query.query_class(), DNSClass::IN | DNSClass::ANY) {
        return Outcome::Reply(response_to(request, ResponseCode::Refused));
    }
    let mut reply = response_to(request, ResponseCode::NoError);
    reply.metadata.authoritative = true;
    let owner = query.name().clone();
    let qtype = query.query_type();
    let entry = match records.lookup(&qname) {
        Lookup::Found(entry) => entry,
        Lookup::Empty => return Outcome::Reply(nodata(reply, records)),
        Lookup::Missing | Lookup::Foreign => {
            reply.metadata.response_code = ResponseCode::NXDomain;
            return Outcome::Reply(nodata(reply, records));
        }
    };
    if let Some(target) = &entry.cname {
        let Some(target_name) = name(target) else {
            return Outcome::Reply(response_to(request, ResponseCode::ServFail));
        };
        reply.add_answer(Record::from_rdata(
            owner,
            TTL,
            RData::CNAME(CNAME(target_name.clone())),
        ));
        if matches!(qtype, RecordType::CNAME) {
            return Outcome::Reply(reply);
        }
        return match records.lookup(target) {
            Lookup::Foreign => Outcome::Chase {
                reply,
                target: target_name,
                query_type: qtype,
            },
            Lookup::Found(found) if matches!(qtype, RecordType::A | RecordType::ANY) => {
                reply.add_answers(a_records(&target_name, &found.a));
                Outcome::Reply(reply)
            }
            _ => Outcome::Reply(reply),
        };
    }
    match qtype {
        RecordType::A => reply.add_answers(a_records(&owner, &entry.a)),
        RecordType::SRV => {
            for srv in &entry.srv {
                let Some(target) = name(&srv.target) else {
                    continue;
                };
                let data = SRV::new(0, 100, srv.port, target.clone());
                reply.add_answer(Record::from_rdata(owner.clone(), TTL, RData::SRV(data)));
                if let Lookup::Found(t) = records.lookup(&srv.target) {
                    reply.add_additionals(a_records(&target, &t.a));
                }
            }
            &mut reply
        }
        RecordType::ANY => reply.add_answers(a_records(&owner, &entry.a)),
        _ => &mut reply,
    };
    if reply.answers.is_empty() {
        return Outcome::Reply(nodata(reply, records));
    }
    Outcome::Reply(reply)
}

/// NODATA / NXDOMAIN carry the zone's SOA in the authority section (negative caching).
fn nodata(mut reply: Message, records: &Records) -> Message {
    if let Some(soa) = soa(records) {
        reply.add_authority(soa);
    }
    reply
}

/// A query for `target` of `query_type` (recursion desired), for chasing a CNAME upstream.
pub fn chase_query(target: Name, query_type: RecordType) -> Message {
    let mut message = Message::query();
    message.metadata.recursion_desired = true;
    message.add_query(Query::query(target, query_type));
    message
}

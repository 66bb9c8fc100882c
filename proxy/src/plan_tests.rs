//! Plan tests: the writes are minimal, ordered so that every frontend always points at a
//! complete backend set, and idempotent.

use std::net::Ipv4Addr;

use super::*;
use crate::model::{Frontend, Protocol};
use crate::state::ObjectKey;

/// The maps as the kernel holds them, op by op.
#[derive(Default)]
struct Kernel {
    frontends: BTreeMap<FrontendKey, FrontendValue>,
    backends: BTreeMap<BackendKey, BackendChunk>,
}

impl Kernel {
    /// Applies the plan, checking after every op that each frontend's sets are whole.
    fn apply(&mut self, plan: &Plan) {
        for (step, op) in plan.ops.iter().enumerate() {
            match *op {
                Op::PutBackend(k, v) => {
                    self.backends.insert(k, v);
                }
                Op::PutFrontend(k, v) => {
                    self.frontends.insert(k, v);
                }
                Op::DeleteFrontend(k) => {
                    assert!(
                        self.frontends.remove(&k).is_some(),
                        "step {step}: delete of absent {k:?}"
                    );
                }
                Op::DeleteBackend(k) => {
                    assert!(
                        self.backends.remove(&k).is_some(),
                        "step {step}: delete of absent {k:?}"
                    );
                }
            }
            self.assert_whole(step);
        }
        assert_eq!(
            MapContents::from_entries(self.frontends.clone(), self.backends.clone()),
            plan.next,
            "the plan's `next` is what the maps hold"
        );
    }

    fn assert_whole(&self, step: usize) {
        for (k, v) in &self.frontends {
            for (set, count) in [(v.set_id, v.count), (v.local_set_id, v.local_count)] {
                for index in 0..usize::from(count) {
                    let key = BackendKey {
                        set_id: set,
                        chunk: (index / CHUNK) as u32,
                    };
                    let slot = self.backends.get(&key).map(|c| c.slot[index % CHUNK]);
                    assert!(
                        slot.is_some_and(|s| s != BackendValue::default()),
                        "step {step}: frontend {k:?} points at missing slot {set}/{index}"
                    );
                }
            }
        }
    }

    fn contents(&self) -> MapContents {
        MapContents::from_entries(self.frontends.clone(), self.backends.clone())
    }
}

fn ip(last: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 96, 0, last)
}

fn backend(last: u8, local: bool) -> Backend {
    Backend {
        addr: Ipv4Addr::new(10, 244, 0, last),
        port: 8080,
        local,
    }
}

fn port(frontends: Vec<Frontend>, backends: Vec<Backend>) -> ServicePort {
    let local_backends = backends.iter().filter(|b| b.local).copied().collect();
    ServicePort {
        frontends,
        backends,
        local_backends,
        affinity_timeout: None,
        external_local: false,
        internal_local: false,
    }
}

fn cluster_ip(last: u8) -> Frontend {
    Frontend {
        addr: ip(last),
        port: 80,
        kind: FrontendKind::ClusterIp,
    }
}

fn node_port() -> Frontend {
    Frontend {
        addr: Ipv4Addr::new(192, 168, 1, 10),
        port: 30080,
        kind: FrontendKind::NodePort,
    }
}

fn key(name: &str) -> ServicePortKey {
    ServicePortKey {
        service: ObjectKey::new("default", name),
        port: "http".into(),
        protocol: Protocol::Tcp,
    }
}

fn model(ports: Vec<(&str, ServicePort)>) -> Model {
    Model {
        ports: ports.into_iter().map(|(n, p)| (key(n), p)).collect(),
        warnings: vec![],
    }
}

fn fe_key(fe: Frontend) -> FrontendKey {
    FrontendKey {
        addr: skiff_ebpf::be_addr(fe.addr),
        port: skiff_ebpf::be_port(fe.port),
        proto: skiff_ebpf::IPPROTO_TCP,
        pad: 0,
    }
}

#[test]
fn first_sync_writes_sets_before_frontends_and_a_second_writes_nothing() {
    let m = model(vec![
        (
            "web",
            port(
                vec![cluster_ip(1), node_port()],
                vec![backend(3, true), backend(2, false)],
            ),
        ),
        ("empty", port(vec![cluster_ip(2)], vec![])),
    ]);
    let mut kernel = Kernel::default();
    let p = plan(&m, &kernel.contents());
    assert_eq!(
        p.counts(),
        OpCounts {
            frontend_puts: 3,
            frontend_deletes: 0,
            backend_puts: 1,
            backend_deletes: 0
        }
    );
    kernel.apply(&p);

    let web = kernel.frontends[&fe_key(cluster_ip(1))];
    let np = kernel.frontends[&fe_key(node_port())];
    assert_eq!(
        (web.svc_id, web.set_id),
        (np.svc_id, np.set_id),
        "one Service port, one set"
    );
    assert_eq!((web.count, web.local_count), (2, 1));
    assert_eq!(
        web.local_set_id, web.set_id,
        "the local set is a prefix of the cluster set"
    );
    assert_eq!(web.flags, 0);
    assert_eq!(np.flags, skiff_ebpf::FE_EXTERNAL | skiff_ebpf::FE_NODEPORT);
    // Local backends come first in the set.
    let chunk = kernel.backends[&BackendKey {
        set_id: web.set_id,
        chunk: 0,
    }];
    assert_eq!(chunk.slot[0].flags, skiff_ebpf::BE_LOCAL);
    assert_eq!(chunk.slot[1].flags, 0);
    assert_eq!(
        chunk.slot[2],
        BackendValue::default(),
        "padding after the count"
    );

    let empty = kernel.frontends[&fe_key(cluster_ip(2))];
    assert_eq!(
        (empty.count, empty.set_id),
        (0, 0),
        "no endpoints: an empty set"
    );

    assert!(
        plan(&m, &kernel.contents()).ops.is_empty(),
        "nothing changed, nothing written"
    );
}

#[test]
fn a_changed_backend_set_is_written_fresh_flipped_then_freed() {
    let mut kernel = Kernel::default();
    let before = model(vec![(
        "web",
        port(
            vec![cluster_ip(1)],
            vec![backend(2, false), backend(3, false)],
        ),
    )]);
    kernel.apply(&plan(&before, &kernel.contents()));
    let old = kernel.frontends[&fe_key(cluster_ip(1))];

    let after = model(vec![(
        "web",
        port(
            vec![cluster_ip(1)],
            vec![backend(3, false), backend(4, false)],
        ),
    )]);
    let p = plan(&after, &kernel.contents());
    let kinds: Vec<&str> = p
        .ops
        .iter()
        .map(|op| match op {
            Op::PutBackend(..) => "put-backend",
            Op::PutFrontend(..) => "put-frontend",
            Op::DeleteFrontend(..) => "delete-frontend",
            Op::DeleteBackend(..) => "delete-backend",
        })
        .collect();
    // (two backends: one chunk each way)
    assert_eq!(kinds, ["put-backend", "put-frontend", "delete-backend"]);
    kernel.apply(&p);
    let new = kernel.frontends[&fe_key(cluster_ip(1))];
    assert_ne!(new.set_id, old.set_id, "never rewritten in place");
    assert_eq!(
        new.svc_id, old.svc_id,
        "the Service port keeps its id (affinity survives)"
    );
    assert!(
        !kernel.backends.keys().any(|k| k.set_id == old.set_id),
        "old set freed"
    );
}

#[test]
fn removed_services_and_frontends_are_deleted_frontend_first() {
    let mut kernel = Kernel::default();
    let before = model(vec![
        (
            "web",
            port(vec![cluster_ip(1), node_port()], vec![backend(2, false)]),
        ),
        ("gone", port(vec![cluster_ip(9)], vec![backend(9, false)])),
    ]);
    kernel.apply(&plan(&before, &kernel.contents()));
    let after = model(vec![(
        "web",
        port(vec![cluster_ip(1)], vec![backend(2, false)]),
    )]);
    let p = plan(&after, &kernel.contents());
    assert_eq!(
        p.counts(),
        OpCounts {
            frontend_puts: 0,
            frontend_deletes: 2,
            backend_puts: 0,
            backend_deletes: 1
        }
    );
    kernel.apply(&p);
    assert_eq!(kernel.frontends.len(), 1);
    assert_eq!(kernel.backends.len(), 1);
}

#[test]
fn a_local_set_that_is_not_a_prefix_gets_its_own_set() {
    let mut sp = port(vec![node_port()], vec![backend(2, false)]);
    sp.local_backends = vec![backend(7, true)]; // a terminating local endpoint (fallback)
    sp.external_local = true;
    let mut kernel = Kernel::default();
    kernel.apply(&plan(&model(vec![("web", sp)]), &kernel.contents()));
    let v = kernel.frontends[&fe_key(node_port())];
    assert_ne!(v.local_set_id, v.set_id);
    assert_eq!((v.count, v.local_count), (1, 1));
    assert_eq!(
        v.flags,
        skiff_ebpf::FE_EXTERNAL | skiff_ebpf::FE_ETP_LOCAL | skiff_ebpf::FE_NODEPORT
    );
}

#[test]
fn flags_for_affinity_and_internal_policy() {
    let mut sp = port(vec![cluster_ip(1)], vec![backend(2, false)]);
    sp.affinity_timeout = Some(30);
    sp.internal_local = true;
    let p = plan(&model(vec![("web", sp)]), &MapContents::default());
    let v = p.next.frontends[&fe_key(cluster_ip(1))];
    assert_eq!(v.flags, skiff_ebpf::FE_AFFINITY | skiff_ebpf::FE_ITP_LOCAL);
    assert_eq!(v.affinity_timeout, 30);
    assert_eq!((v.local_count, v.local_set_id), (0, 0));
}

#[test]
fn state_read_back_after_a_restart_is_reused_and_strays_are_removed() {
    let m = model(vec![(
        "web",
        port(vec![cluster_ip(1)], vec![backend(2, false)]),
    )]);
    let mut kernel = Kernel::default();
    kernel.apply(&plan(&m, &kernel.contents()));
    // A sync killed half way left chunks of a set no frontend points at, with a gap.
    for chunk in [0, 2] {
        kernel
            .backends
            .insert(BackendKey { set_id: 77, chunk }, BackendChunk::default());
    }
    let read_back = kernel.contents();
    assert_eq!(read_back.stray.len(), 1);
    let p = plan(&m, &read_back);
    assert_eq!(
        p.counts(),
        OpCounts {
            frontend_puts: 0,
            frontend_deletes: 0,
            backend_puts: 0,
            backend_deletes: 2
        }
    );
    kernel.apply(&p);
    assert_eq!(kernel.backends.len(), 1);
}

#[test]
fn large_sets_take_whole_chunks() {
    let backends: Vec<Backend> = (0..40).map(|i| backend(i, false)).collect();
    let m = model(vec![("big", port(vec![cluster_ip(1)], backends))]);
    let mut kernel = Kernel::default();
    let p = plan(&m, &kernel.contents());
    assert_eq!(
        p.counts().backend_puts,
        3,
        "40 backends: 3 chunks of {CHUNK}"
    );
    kernel.apply(&p);
    assert_eq!(kernel.contents().backend_slots(), 40);
    let v = kernel.frontends[&fe_key(cluster_ip(1))];
    assert_eq!(v.count, 40);
    let fewer = model(vec![(
        "big",
        port(
            vec![cluster_ip(1)],
            (0..17).map(|i| backend(i, false)).collect(),
        ),
    )]);
    let p = plan(&fewer, &kernel.contents());
    assert_eq!(
        (p.counts().backend_puts, p.counts().backend_deletes),
        (2, 3),
        "a new set of 2 chunks, the old 3 freed"
    );
    kernel.apply(&p);
}

#[test]
fn fresh_ids_never_collide_with_ids_in_use() {
    let mut ids = Ids::new([1, 2, 5, u32::MAX]);
    let fresh: Vec<u32> = (0..4).map(|_| ids.fresh()).collect();
    assert_eq!(
        fresh,
        [3, 4, 6, 7],
        "wraps past u32::MAX and 0, skips ids in use"
    );
}

#[test]
fn many_services_churn_stays_whole_at_every_step() {
    let mut kernel = Kernel::default();
    for round in 0..5u8 {
        let ports = (0..20u8)
            .filter(|i| (i + round) % 7 != 0)
            .map(|i| {
                let backends = (0..(i + round) % 4)
                    .map(|b| backend(b + round, b % 2 == 0))
                    .collect();
                (format!("svc-{i}"), port(vec![cluster_ip(i)], backends))
            })
            .collect::<Vec<_>>();
        let m = Model {
            ports: ports.into_iter().map(|(n, p)| (key(&n), p)).collect(),
            warnings: vec![],
        };
        kernel.apply(&plan(&m, &kernel.contents()));
        assert!(plan(&m, &kernel.contents()).ops.is_empty());
    }
}

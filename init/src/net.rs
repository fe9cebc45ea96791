//! Network bring-up over rtnetlink: lo up; eth0 up with the member's address
//! and the default route, when the host did not configure it.
//!
//! LXC creates eth0 inside the container's namespace but leaves it down and
//! unaddressed unless Proxmox ≥ 9.1 runs with `host-managed=1`.
//! [`ensure`] is idempotent: it adds only what is
//! missing (an address already on eth0 is kept, a present default route is
//! not touched) and reports what it did. The messages are built and parsed
//! with `netlink-packet-route` over a blocking `netlink-sys` socket; the only
//! hand-written part is the request/ack loop.

use std::net::{IpAddr, Ipv4Addr};

use haimg_model::Ipv4Net;
use netlink_packet_core::{
    DecodeError, NetlinkDeserializable, NetlinkHeader, NetlinkMessage, NetlinkPayload,
    NetlinkSerializable, Parseable, NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL, NLM_F_REQUEST,
};
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{LinkFlags, LinkHeader};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::AddressFamily;
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};

/// The rtnetlink messages the init sends and reads, as the crate's own types.
/// A narrow enum instead of the crate's `RouteNetlinkMessage`, whose decoder
/// links the parsers of every message family (about 300 KB of a 2 MB binary);
/// link and route replies are read as headers only, which is all the init needs.
#[derive(Debug)]
enum Rt {
    GetLinks(LinkHeader),
    SetLink(LinkHeader),
    Link(LinkHeader),
    GetAddrs(AddressMessage),
    Addr(AddressMessage),
    GetRoutes(RouteHeader),
    NewRoute(RouteMessage),
    Route(RouteHeader),
    Other,
}

impl NetlinkSerializable for Rt {
    fn message_type(&self) -> u16 {
        match self {
            Rt::GetLinks(_) => libc::RTM_GETLINK,
            Rt::SetLink(_) => libc::RTM_SETLINK,
            Rt::Link(_) => libc::RTM_NEWLINK,
            Rt::GetAddrs(_) => libc::RTM_GETADDR,
            Rt::Addr(_) => libc::RTM_NEWADDR,
            Rt::GetRoutes(_) => libc::RTM_GETROUTE,
            Rt::NewRoute(_) | Rt::Route(_) => libc::RTM_NEWROUTE,
            Rt::Other => 0,
        }
    }

    fn buffer_len(&self) -> usize {
        use netlink_packet_core::Emitable;
        match self {
            Rt::GetLinks(h) | Rt::SetLink(h) | Rt::Link(h) => h.buffer_len(),
            Rt::GetAddrs(m) | Rt::Addr(m) => m.buffer_len(),
            Rt::GetRoutes(h) | Rt::Route(h) => h.buffer_len(),
            Rt::NewRoute(m) => m.buffer_len(),
            Rt::Other => 0,
        }
    }

    fn serialize(&self, buffer: &mut [u8]) {
        use netlink_packet_core::Emitable;
        match self {
            Rt::GetLinks(h) | Rt::SetLink(h) | Rt::Link(h) => h.emit(buffer),
            Rt::GetAddrs(m) | Rt::Addr(m) => m.emit(buffer),
            Rt::GetRoutes(h) | Rt::Route(h) => h.emit(buffer),
            Rt::NewRoute(m) => m.emit(buffer),
            Rt::Other => {}
        }
    }
}

impl NetlinkDeserializable for Rt {
    type Error = DecodeError;

    fn deserialize(header: &NetlinkHeader, payload: &[u8]) -> Result<Rt, DecodeError> {
        Ok(match header.message_type {
            libc::RTM_NEWLINK => Rt::Link(LinkHeader::parse(payload)?),
            libc::RTM_NEWADDR => Rt::Addr(AddressMessage::parse(payload)?),
            libc::RTM_NEWROUTE => Rt::Route(RouteHeader::parse(payload)?),
            _ => Rt::Other,
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("failed to open a netlink socket: {0}")]
    Socket(std::io::Error),
    #[error("netlink {what}: {error}")]
    Io {
        what: &'static str,
        error: std::io::Error,
    },
    #[error("netlink {what}: could not decode the kernel's reply: {detail}")]
    Decode { what: &'static str, detail: String },
    #[error("interface {name} does not exist")]
    NoSuchLink { name: String },
}

/// What [`ensure`] found and did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NetReport {
    pub lo_up: bool,
    pub link_up: bool,
    pub address_added: bool,
    pub route_added: bool,
    /// Addresses eth0 had before.
    pub existing: Vec<Ipv4Net>,
}

impl NetReport {
    pub fn summary(&self, name: &str) -> String {
        let mut did = Vec::new();
        if self.lo_up {
            did.push("lo up".to_string());
        }
        if self.link_up {
            did.push(format!("{name} up"));
        }
        if self.address_added {
            did.push("address added".into());
        }
        if self.route_added {
            did.push("default route added".into());
        }
        if did.is_empty() {
            "already configured".into()
        } else {
            did.join(", ")
        }
    }
}

/// One rtnetlink socket and its sequence numbers.
pub struct Netlink {
    sock: Socket,
    seq: u32,
}

impl Netlink {
    pub fn open() -> Result<Netlink, NetError> {
        let mut sock = Socket::new(NETLINK_ROUTE).map_err(NetError::Socket)?;
        sock.bind_auto().map_err(NetError::Socket)?;
        sock.connect(&SocketAddr::new(0, 0))
            .map_err(NetError::Socket)?;
        Ok(Netlink { sock, seq: 0 })
    }

    /// Send one request and collect the replies until the ack, the error or
    /// the end of a dump.
    fn request(&mut self, what: &'static str, msg: Rt, flags: u16) -> Result<Vec<Rt>, NetError> {
        self.seq += 1;
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | flags;
        header.sequence_number = self.seq;
        let mut packet = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(msg));
        packet.finalize();
        let mut buf = vec![0; packet.buffer_len()];
        packet.serialize(&mut buf);
        let io = |error| NetError::Io { what, error };
        self.sock.send(&buf, 0).map_err(io)?;
        let dump = flags & NLM_F_DUMP != 0;
        let mut out = Vec::new();
        loop {
            let mut rx: Vec<u8> = Vec::with_capacity(64 * 1024);
            let n = self.sock.recv(&mut rx, 0).map_err(io)?;
            let mut off = 0;
            while off < n {
                let reply = NetlinkMessage::<Rt>::deserialize(&rx[off..n]).map_err(|e| {
                    NetError::Decode {
                        what,
                        detail: e.to_string(),
                    }
                })?;
                let len = reply.header.length as usize;
                if reply.header.sequence_number == self.seq {
                    match reply.payload {
                        NetlinkPayload::Done(_) => return Ok(out),
                        NetlinkPayload::Error(e) => {
                            return match e.code {
                                None => Ok(out),
                                Some(_) => Err(io(e.to_io())),
                            }
                        }
                        NetlinkPayload::InnerMessage(m) => {
                            out.push(m);
                            if !dump {
                                return Ok(out);
                            }
                        }
                        _ => {}
                    }
                }
                if len == 0 {
                    break;
                }
                off += len;
            }
        }
    }

    /// Index and flags of the interface called `name`.
    pub fn link(&mut self, name: &str) -> Result<Option<(u32, LinkFlags)>, NetError> {
        let Ok(index) = nix::net::if_::if_nametoindex(name) else {
            return Ok(None);
        };
        let links = self.request("link dump", Rt::GetLinks(LinkHeader::default()), NLM_F_DUMP)?;
        Ok(links.into_iter().find_map(|m| match m {
            Rt::Link(h) if h.index == index => Some((index, h.flags)),
            _ => None,
        }))
    }

    pub fn set_up(&mut self, index: u32) -> Result<(), NetError> {
        let header = LinkHeader {
            index,
            flags: LinkFlags::Up,
            change_mask: LinkFlags::Up,
            ..LinkHeader::default()
        };
        self.request("link up", Rt::SetLink(header), NLM_F_ACK)
            .map(drop)
    }

    /// IPv4 addresses on the interface with `index`.
    pub fn ipv4_addrs(&mut self, index: u32) -> Result<Vec<Ipv4Net>, NetError> {
        let mut req = AddressMessage::default();
        req.header.family = AddressFamily::Inet;
        let all = self.request("address dump", Rt::GetAddrs(req), NLM_F_DUMP)?;
        Ok(all
            .into_iter()
            .filter_map(|m| match m {
                Rt::Addr(a) if a.header.index == index => {
                    let prefix = a.header.prefix_len;
                    a.attributes.iter().find_map(|at| match at {
                        AddressAttribute::Local(IpAddr::V4(ip))
                        | AddressAttribute::Address(IpAddr::V4(ip)) => {
                            Some(Ipv4Net { addr: *ip, prefix })
                        }
                        _ => None,
                    })
                }
                _ => None,
            })
            .collect())
    }

    pub fn add_addr(&mut self, index: u32, net: Ipv4Net) -> Result<(), NetError> {
        let mut msg = AddressMessage::default();
        msg.header.family = AddressFamily::Inet;
        msg.header.prefix_len = net.prefix;
        msg.header.index = index;
        msg.attributes = vec![
            AddressAttribute::Local(IpAddr::V4(net.addr)),
            AddressAttribute::Address(IpAddr::V4(net.addr)),
            AddressAttribute::Broadcast(net.broadcast()),
        ];
        self.request(
            "add address",
            Rt::Addr(msg),
            NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
        )
        .map(drop)
    }

    /// Is there an IPv4 default route in the main table?
    pub fn has_default_route(&mut self) -> Result<bool, NetError> {
        let req = RouteHeader {
            address_family: AddressFamily::Inet,
            ..RouteHeader::default()
        };
        let routes = self.request("route dump", Rt::GetRoutes(req), NLM_F_DUMP)?;
        Ok(routes.iter().any(|m| match m {
            Rt::Route(h) => {
                h.address_family == AddressFamily::Inet
                    && h.table == RouteHeader::RT_TABLE_MAIN
                    && h.destination_prefix_length == 0
            }
            _ => false,
        }))
    }

    pub fn add_default_route(&mut self, gateway: Ipv4Addr, index: u32) -> Result<(), NetError> {
        let mut msg = RouteMessage::default();
        msg.header.address_family = AddressFamily::Inet;
        msg.header.table = RouteHeader::RT_TABLE_MAIN;
        msg.header.protocol = RouteProtocol::Boot;
        msg.header.scope = RouteScope::Universe;
        msg.header.kind = RouteType::Unicast;
        msg.attributes = vec![
            RouteAttribute::Gateway(RouteAddress::Inet(gateway)),
            RouteAttribute::Oif(index),
        ];
        self.request(
            "add default route",
            Rt::NewRoute(msg),
            NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
        )
        .map(drop)
    }
}

/// The IPv4 addresses on `name`, or none if it does not exist (identity evidence).
pub fn addrs_of(name: &str) -> Result<Vec<Ipv4Net>, NetError> {
    let mut nl = Netlink::open()?;
    match nl.link(name)? {
        Some((idx, _)) => nl.ipv4_addrs(idx),
        None => Ok(Vec::new()),
    }
}

/// `net` on the interface `name` (which must exist), unless it is there already.
pub fn ensure_addr(name: &str, net: Ipv4Net) -> Result<(), NetError> {
    let mut nl = Netlink::open()?;
    let Some((index, _)) = nl.link(name)? else {
        return Err(NetError::NoSuchLink {
            name: name.to_string(),
        });
    };
    if nl.ipv4_addrs(index)?.contains(&net) {
        return Ok(());
    }
    nl.add_addr(index, net)
}

/// Bring `lo` up, and `name` up with `address` and a default route via
/// `gateway` unless they are there already.
pub fn ensure(name: &str, address: Ipv4Net, gateway: Ipv4Addr) -> Result<NetReport, NetError> {
    let mut nl = Netlink::open()?;
    let mut report = NetReport::default();
    if let Some((lo, flags)) = nl.link("lo")? {
        if !flags.contains(LinkFlags::Up) {
            nl.set_up(lo)?;
            report.lo_up = true;
        }
    }
    let (idx, flags) = nl.link(name)?.ok_or_else(|| NetError::NoSuchLink {
        name: name.to_string(),
    })?;
    report.existing = nl.ipv4_addrs(idx)?;
    if !report.existing.iter().any(|n| n.addr == address.addr) {
        nl.add_addr(idx, address)?;
        report.address_added = true;
    }
    if !flags.contains(LinkFlags::Up) {
        nl.set_up(idx)?;
        report.link_up = true;
    }
    // A gateway outside the subnet cannot be reached without an on-link route; Proxmox
    // handles that case with post-up scripts, haimg's validation keeps it inside.
    if address.contains(gateway) && !nl.has_default_route()? {
        nl.add_default_route(gateway, idx)?;
        report.route_added = true;
    }
    Ok(report)
}

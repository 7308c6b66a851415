package urlpolicy

import (
	"encoding/binary"
	"net/netip"
)

// The ranges below are kept by hand, entry by entry from IANA's special-
// purpose address registries (iana-ipv4-special-registry and
// iana-ipv6-special-registry, RFC 6890), and checked by table tests.
//
// Why not code.dny.dev/ssrf, which generates its lists from the same
// registries? Three reasons. Its model is "global unicast only": it refuses
// 10/8, 172.16/12, 192.168/16 and fc00::/7, where Glance's
// import_filtering_opts leave private ranges to the operator's deny list
// (an image mirror on the cluster network is a normal source), so it would
// change this policy's meaning. It refuses 64:ff9b::/96 outright, which
// breaks IPv6-only clusters that reach IPv4 mirrors through DNS64/NAT64,
// while here the IPv4 address inside is extracted and checked. And it does
// not cover the IPv4-compatible ::/96 or the SIIT ::ffff:0:0:0/96 forms.
// It is also not among the modules known to be served here. The lists are
// short, change every few years, and the tests pin each entry.

// alwaysRefused are ranges no import should reach unless an operator lets
// them in by IP or CIDR in allowed hosts: what cannot be a remote image
// server (loopback, unspecified, link-local, multicast, reserved, discard)
// and the cloud metadata services.
var alwaysRefused = []netip.Prefix{
	netip.MustParsePrefix("0.0.0.0/8"),          // "this network", unspecified (RFC 791)
	netip.MustParsePrefix("127.0.0.0/8"),        // loopback (RFC 1122)
	netip.MustParsePrefix("169.254.0.0/16"),     // link-local (RFC 3927), metadata 169.254.169.254 (AWS, GCP, Azure, OpenStack)
	netip.MustParsePrefix("224.0.0.0/4"),        // multicast (RFC 5771)
	netip.MustParsePrefix("240.0.0.0/4"),        // reserved (RFC 1112), with broadcast 255.255.255.255
	netip.MustParsePrefix("100.100.100.200/32"), // Alibaba Cloud metadata (inside 100.64.0.0/10)
	netip.MustParsePrefix("168.63.129.16/32"),   // Azure WireServer, the platform's agent endpoint
	netip.MustParsePrefix("::/128"),             // unspecified (RFC 4291)
	netip.MustParsePrefix("::1/128"),            // loopback (RFC 4291)
	netip.MustParsePrefix("100::/64"),           // discard-only (RFC 6666)
	netip.MustParsePrefix("fe80::/10"),          // link-local (RFC 4291)
	netip.MustParsePrefix("fec0::/10"),          // site-local, deprecated (RFC 3879)
	netip.MustParsePrefix("ff00::/8"),           // multicast (RFC 4291)
	netip.MustParsePrefix("fd00:ec2::254/128"),  // AWS metadata over IPv6
}

// notGlobalV4 are the IPv4 ranges IANA marks not globally reachable, past
// alwaysRefused. RFC 6052 section 3.1 forbids the NAT64 well-known prefix to
// carry them, so a translator that honours the RFC never reaches them
// through it: refusing them there costs nothing, and stops a translator
// that does not honour it from reaching its own private networks.
var notGlobalV4 = []netip.Prefix{
	netip.MustParsePrefix("10.0.0.0/8"),      // private (RFC 1918)
	netip.MustParsePrefix("100.64.0.0/10"),   // shared, carrier-grade NAT (RFC 6598)
	netip.MustParsePrefix("172.16.0.0/12"),   // private (RFC 1918)
	netip.MustParsePrefix("192.0.0.0/24"),    // IETF protocol assignments (RFC 6890)
	netip.MustParsePrefix("192.0.2.0/24"),    // documentation (RFC 5737)
	netip.MustParsePrefix("192.168.0.0/16"),  // private (RFC 1918)
	netip.MustParsePrefix("198.18.0.0/15"),   // benchmarking (RFC 2544)
	netip.MustParsePrefix("198.51.100.0/24"), // documentation (RFC 5737)
	netip.MustParsePrefix("203.0.113.0/24"),  // documentation (RFC 5737)
}

// An embedding is an IPv6 range whose addresses carry an IPv4 address, so
// that a translator or tunnel on the way (a NAT64 gateway, a 6to4 or Teredo
// relay, a kernel's SIT device) may deliver the packets to that IPv4
// address, on its own network: an IPv6 address that is nothing special can
// reach 127.0.0.1 or 169.254.169.254 of the box that translates.
//
// Only NAT64's well-known prefix is let through, after checking the IPv4
// address inside: it is how IPv6-only clusters reach IPv4-only mirrors
// (DNS64 answers 64:ff9b::a.b.c.d for them), so refusing it would break
// real imports. Every other form is refused whatever it carries: they are
// deprecated or obsolete (IPv4-compatible, 6to4, Teredo, SIIT), or, for the
// local-use NAT64 prefix, the position of the IPv4 address depends on the
// prefix length the local network chose (RFC 6052 section 2.2), so it cannot
// be read from the address alone. Failing closed costs nothing there; an
// operator who does use one of them names it in allowed hosts by CIDR.
type embedding struct {
	prefix  netip.Prefix
	name    string
	ipv4    func(a [16]byte) netip.Addr // the IPv4 address carried
	checked bool                        // let through when ipv4 passes; refused otherwise
}

var embeddings = []embedding{
	{netip.MustParsePrefix("64:ff9b::/96"), "NAT64 (well-known prefix, RFC 6052)", last32, true},
	{netip.MustParsePrefix("64:ff9b:1::/48"), "NAT64 (local-use prefix, RFC 8215)", last32, false},
	{netip.MustParsePrefix("::ffff:0:0:0/96"), "IPv4-translated (SIIT, RFC 2765)", last32, false},
	{netip.MustParsePrefix("2002::/16"), "6to4 (RFC 3056)", func(a [16]byte) netip.Addr { return netip.AddrFrom4([4]byte(a[2:6])) }, false},
	{netip.MustParsePrefix("2001::/32"), "Teredo (RFC 4380)", teredoClient, false},
	// Last: the others are inside none of these, but ::/96 is the widest.
	{netip.MustParsePrefix("::/96"), "IPv4-compatible (deprecated, RFC 4291)", last32, false},
}

func last32(a [16]byte) netip.Addr { return netip.AddrFrom4([4]byte(a[12:16])) }

// teredoClient is the Teredo client's IPv4 address: the last 32 bits,
// inverted (RFC 4380 section 4). The server's address, bits 32-63, is a
// relay's business; the client's is where the packets end.
func teredoClient(a [16]byte) netip.Addr {
	var v4 [4]byte
	binary.BigEndian.PutUint32(v4[:], ^binary.BigEndian.Uint32(a[12:16]))
	return netip.AddrFrom4(v4)
}

// embeddedIPv4 tells whether a (unmapped) is in a range that carries an
// IPv4 address, which one, and what that range is.
func embeddedIPv4(a netip.Addr) (embedding, netip.Addr, bool) {
	if !a.Is6() {
		return embedding{}, netip.Addr{}, false
	}
	for _, e := range embeddings {
		if e.prefix.Contains(a) {
			return e, e.ipv4(a.As16()), true
		}
	}
	return embedding{}, netip.Addr{}, false
}

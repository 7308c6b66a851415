package urlpolicy

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/net/dns/dnsmessage"
)

// addrCases are IPv6 forms that carry an IPv4 address, the ranges IANA
// marks special, and the ordinary addresses that must still pass. Each is
// checked as a URL literal and as the address a name resolved to.
var addrCases = []struct {
	policy Policy
	addr   string
	refuse string // "" means accepted
}{
	// IPv4-compatible (::/96), deprecated: refused whatever it carries.
	{Policy{}, "::127.0.0.1", "is IPv4-compatible (deprecated, RFC 4291), carrying 127.0.0.1"},
	{Policy{}, "::169.254.169.254", "carrying 169.254.169.254"},
	{Policy{}, "::8.8.8.8", "IPv4-compatible"},
	{Policy{}, "::", "unspecified"},
	{Policy{}, "::1", "loopback"},
	// IPv4-mapped: the IPv4 address, checked as one.
	{Policy{}, "::ffff:127.0.0.1", "address 127.0.0.1 is loopback"},
	{Policy{}, "::ffff:169.254.169.254", "address 169.254.169.254 is loopback, link-local"},
	{Policy{}, "::ffff:10.0.0.5", ""}, // as 10.0.0.5: private ranges are the operator's to deny
	// IPv4-translated (SIIT, ::ffff:0:0:0/96).
	{Policy{}, "::ffff:0:127.0.0.1", "is IPv4-translated (SIIT, RFC 2765), carrying 127.0.0.1"},
	{Policy{}, "::ffff:0:8.8.8.8", "IPv4-translated"},
	// NAT64, well-known prefix: the IPv4 address inside is checked.
	{Policy{}, "64:ff9b::127.0.0.1", "is NAT64 (well-known prefix, RFC 6052) for 127.0.0.1, which is loopback"},
	{Policy{}, "64:ff9b::a9fe:a9fe", "for 169.254.169.254, which is loopback, link-local"},
	{Policy{}, "64:ff9b::0.0.0.0", "for 0.0.0.0, which is loopback"},
	{Policy{}, "64:ff9b::10.0.0.5", "for 10.0.0.5, which is not globally reachable"},
	{Policy{}, "64:ff9b::192.168.1.1", "not globally reachable"},
	{Policy{}, "64:ff9b::100.100.100.200", "metadata"},
	{Policy{}, "64:ff9b::8.8.8.8", ""}, // DNS64 in an IPv6-only cluster, for a public mirror
	{Policy{DisallowedHosts: []string{"8.8.8.0/24"}}, "64:ff9b::8.8.8.8", "for 8.8.8.8, which is disallowed"},
	// NAT64, local-use prefix: where the IPv4 address sits is the network's choice.
	{Policy{}, "64:ff9b:1::7f00:1", "is NAT64 (local-use prefix, RFC 8215)"},
	{Policy{}, "64:ff9b:1:7f00:0:100::", "local-use"}, // 127.0.0.1 in the /48 layout
	{Policy{}, "64:ff9b:1::808:808", "local-use"},
	// 6to4 (2002::/16): the IPv4 address is bits 16-47.
	{Policy{}, "2002:7f00:1::", "is 6to4 (RFC 3056), carrying 127.0.0.1"},
	{Policy{}, "2002:a9fe:a9fe::1", "carrying 169.254.169.254"},
	{Policy{}, "2002:808:808::1", "6to4"},
	// Teredo (2001::/32): the client's IPv4 address is the last 32 bits, inverted.
	{Policy{}, "2001:0:4136:e378:8000:63bf:80ff:fffe", "is Teredo (RFC 4380), carrying 127.0.0.1"},
	{Policy{}, "2001:0:4136:e378:8000:63bf:5601:5601", "carrying 169.254.169.254"},
	{Policy{}, "2001::1", "Teredo"},
	// Other special ranges.
	{Policy{}, "fec0::1", "reserved"},
	{Policy{}, "100::1", "reserved"},
	{Policy{}, "ff02::1", "multicast"},
	{Policy{}, "fe80::a9fe:a9fe", "link-local"},
	{Policy{}, "fd00:ec2::254", "metadata"},
	{Policy{}, "240.0.0.1", "reserved"},
	{Policy{}, "255.255.255.255", "reserved"},
	{Policy{}, "100.100.100.200", "metadata"},
	{Policy{}, "168.63.129.16", "metadata"},
	// Ordinary addresses pass.
	{Policy{}, "2606:4700:4700::1111", ""},
	{Policy{}, "2001:4860:4860::8888", ""}, // 2001:4860::/32 is not Teredo's 2001::/32
	{Policy{}, "2001:db8::1", ""},
	{Policy{}, "fd12:3456::1", ""}, // unique-local: the operator's, as 10/8
	{Policy{}, "8.8.8.8", ""},
	{Policy{}, "100.64.0.1", ""},
	// An allowed-hosts CIDR that names the IPv6 form is the operator's choice.
	{Policy{AllowedHosts: []string{"2002::/16"}}, "2002:7f00:1::", ""},
	{Policy{AllowedHosts: []string{"64:ff9b::/96"}}, "64:ff9b::127.0.0.1", ""},
	// An allowed IPv4 address does not let in a translation to it: that
	// reaches the translator's own 127.0.0.1, not the one the operator meant.
	{Policy{AllowedHosts: []string{"127.0.0.1"}}, "64:ff9b::127.0.0.1", "not in the allowed hosts"},
}

func TestEmbeddedIPv4AndSpecialRanges(t *testing.T) {
	for _, tc := range addrCases {
		p := tc.policy
		p.AllowedSchemes = []string{"http"}
		c := mustCompile(t, p)
		a := netip.MustParseAddr(tc.addr)
		check := func(how string, err error) {
			t.Helper()
			switch {
			case tc.refuse == "" && err != nil:
				t.Errorf("%s %s = %v, want accepted", how, tc.addr, err)
			case tc.refuse != "" && (err == nil || !strings.Contains(err.Error(), tc.refuse)):
				t.Errorf("%s %s = %v, want a refusal containing %q", how, tc.addr, err, tc.refuse)
			case tc.refuse != "" && !errors.Is(err, ErrRefused):
				t.Errorf("%s %s = %v, want it to wrap ErrRefused", how, tc.addr, err)
			}
		}
		_, err := c.CheckURL("http://" + net.JoinHostPort(tc.addr, "80") + "/image")
		check("CheckURL", err)
		if !strings.Contains(tc.refuse, "allowed hosts") { // the allow list binds URLs, not resolved addresses
			check("CheckAddr", c.CheckAddr(a))
		}
	}
}

// TestDialerRefusesWhatANameResolvesTo: a name that passes the URL check
// resolves (through a DNS server on 127.0.0.1 that answers like DNS64, or
// like an attacker) to an address that carries a refused IPv4 address. The
// dialer refuses it before connect: no packet leaves.
func TestDialerRefusesWhatANameResolvesTo(t *testing.T) {
	answers := map[string]string{
		"nat64-loopback.test.":     "64:ff9b::7f00:1",
		"nat64-metadata.test.":     "64:ff9b::a9fe:a9fe",
		"sixtofour-loopback.test.": "2002:7f00:1::",
		"teredo-loopback.test.":    "2001:0:4136:e378:8000:63bf:80ff:fffe",
		"compat-loopback.test.":    "::7f00:1",
		"siit-loopback.test.":      "::ffff:0:7f00:1",
		"mapped-metadata.test.":    "::ffff:169.254.169.254",
	}
	resolver := fakeDNS(t, answers)
	c := mustCompile(t, Default())
	for name, addr := range answers {
		host := strings.TrimSuffix(name, ".")
		if _, err := c.CheckURL("http://" + host + "/image"); err != nil {
			t.Fatalf("CheckURL(%s) = %v: the name itself must pass, for the dialer to be what refuses", host, err)
		}
		d := c.Dialer(2 * time.Second)
		d.Resolver = resolver
		policyControl := d.Control
		d.Control = func(network, address string, conn syscall.RawConn) error {
			if err := policyControl(network, address, conn); err != nil {
				return err
			}
			return errLetThrough // never connect: the test must send nothing off this host
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		conn, err := d.DialContext(ctx, "tcp", host+":80")
		cancel()
		if err == nil {
			conn.Close()
		}
		if !errors.Is(err, ErrRefused) {
			t.Errorf("dialling %s (%s) = %v, want a refusal", host, addr, err)
		} else {
			t.Logf("%s: %v", host, err)
		}
	}
}

var errLetThrough = errors.New("the policy let the address through")

// fakeDNS answers A and AAAA queries from answers (name -> address) on a
// UDP socket on 127.0.0.1, and returns a resolver that asks only it.
func fakeDNS(t *testing.T, answers map[string]string) *net.Resolver {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 1500)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			if reply, err := answer(buf[:n], answers); err == nil {
				pc.WriteTo(reply, from)
			}
		}
	}()
	return &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "udp", pc.LocalAddr().String())
	}}
}

func answer(query []byte, answers map[string]string) ([]byte, error) {
	var p dnsmessage.Parser
	h, err := p.Start(query)
	if err != nil {
		return nil, err
	}
	q, err := p.Question()
	if err != nil {
		return nil, err
	}
	b := dnsmessage.NewBuilder(nil, dnsmessage.Header{ID: h.ID, Response: true, Authoritative: true})
	b.EnableCompression()
	b.StartQuestions()
	b.Question(q)
	b.StartAnswers()
	rh := dnsmessage.ResourceHeader{Name: q.Name, Class: dnsmessage.ClassINET, TTL: 60}
	if a, ok := answers[q.Name.String()]; ok {
		addr := netip.MustParseAddr(a)
		switch {
		case q.Type == dnsmessage.TypeAAAA:
			b.AAAAResource(rh, dnsmessage.AAAAResource{AAAA: addr.As16()})
		case q.Type == dnsmessage.TypeA && addr.Is4():
			b.AResource(rh, dnsmessage.AResource{A: addr.As4()})
		}
	}
	return b.Finish()
}

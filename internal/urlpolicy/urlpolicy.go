// Package urlpolicy decides which import URLs may be fetched. It follows
// Glance's [import_filtering_opts] (allowed/disallowed schemes, hosts and
// ports, where an allow list makes its deny list moot) and closes the holes
// Glance leaves open:
//
//   - numeric and shorthand IPv4 forms (2130706433, 0x7f000001, 127.1) are
//     refused, as in Glance;
//   - host names are compared as the HTTP client resolves them: IDNA-mapped
//     (a fullwidth "ｌocalhost" is localhost), case-folded, without the
//     trailing dot (hostname.go);
//   - the address actually dialled is checked (CheckAddr, from Dialer), so a
//     name that resolves, or re-resolves, into a refused range is refused;
//   - loopback, link-local, unspecified, multicast, reserved and cloud
//     metadata addresses are refused unless an allowed-hosts IP or CIDR
//     covers them, and so are IPv6 addresses that carry an IPv4 address a
//     translator would deliver to (NAT64, 6to4, Teredo, IPv4-compatible,
//     SIIT), except NAT64's well-known prefix with an acceptable IPv4
//     address inside (ranges.go).
//
// The shim checks URLs at create time and the importer at fetch time and on
// every redirect; both use this package.
package urlpolicy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// ErrRefused is wrapped by every refusal.
var ErrRefused = errors.New("refused by the import URL policy")

// Policy is Glance's [import_filtering_opts]. Empty lists impose nothing,
// except that AllowedSchemes and AllowedPorts default as in Glance.
type Policy struct {
	AllowedSchemes    []string
	DisallowedSchemes []string
	AllowedHosts      []string // names, IPs or CIDRs
	DisallowedHosts   []string
	AllowedPorts      []int
	DisallowedPorts   []int
}

// Default is Glance's default policy.
func Default() Policy {
	return Policy{AllowedSchemes: []string{"http", "https"}, AllowedPorts: []int{80, 443}}
}

// Compiled is a Policy ready to check URLs and addresses. Name entries are
// kept in canonical form (canonicalHost).
type Compiled struct {
	policy       Policy
	allowedNames []string
	allowedNets  []netip.Prefix
	deniedNames  []string
	deniedNets   []netip.Prefix
}

// Compile checks a policy's entries.
func Compile(p Policy) (*Compiled, error) {
	c := &Compiled{policy: p}
	var err error
	if c.allowedNames, c.allowedNets, err = parseHosts(p.AllowedHosts); err != nil {
		return nil, fmt.Errorf("allowed hosts: %w", err)
	}
	if c.deniedNames, c.deniedNets, err = parseHosts(p.DisallowedHosts); err != nil {
		return nil, fmt.Errorf("disallowed hosts: %w", err)
	}
	for _, port := range slices.Concat(p.AllowedPorts, p.DisallowedPorts) {
		if port < 1 || port > 65535 {
			return nil, fmt.Errorf("port %d is not in 1-65535", port)
		}
	}
	return c, nil
}

func parseHosts(entries []string) (names []string, nets []netip.Prefix, err error) {
	for _, e := range entries {
		e = strings.TrimSpace(e)
		switch {
		case e == "":
		case strings.Contains(e, "/"):
			p, err := netip.ParsePrefix(e)
			if err != nil {
				return nil, nil, fmt.Errorf("%q is not a CIDR", e)
			}
			nets = append(nets, p.Masked())
		default:
			if a, err := netip.ParseAddr(strings.Trim(e, "[]")); err == nil {
				nets = append(nets, netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()))
				continue
			}
			name, err := normalizeName(e)
			if err != nil {
				return nil, nil, fmt.Errorf("%q is not a host name: %v", e, err)
			}
			if a, err := netip.ParseAddr(name); err == nil { // as checkHost reads it
				nets = append(nets, netip.PrefixFrom(a, a.BitLen()))
				continue
			}
			names = append(names, name)
		}
	}
	return names, nets, nil
}

// numericHost matches hosts made only of numbers, in any base, and dots:
// forms that some resolvers read as IPv4 addresses (2130706433, 0x7f000001,
// 127.1, 0177.0.0.1) but that are no canonical address.
var numericHost = regexp.MustCompile(`^(0x[0-9a-f]*|[0-9]+)(\.(0x[0-9a-f]*|[0-9]*))*$`)

// CheckURL checks a URL's scheme, host and port, without resolving it. The
// URL it returns has its host in the form that was checked: ASCII, as the
// client will look it up.
func (c *Compiled) CheckURL(raw string) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, refuse("%q is not a URL", raw)
	}
	if err := c.checkScheme(strings.ToLower(u.Scheme)); err != nil {
		return nil, err
	}
	host := u.Hostname()
	if host == "" {
		return nil, refuse("the URL has no host")
	}
	dial, err := c.checkHost(host)
	if err != nil {
		return nil, err
	}
	if err := c.checkPort(u.Port()); err != nil {
		return nil, err
	}
	if dial != host {
		if port := u.Port(); port != "" {
			u.Host = net.JoinHostPort(dial, port)
		} else {
			u.Host = dial
		}
	}
	return u, nil
}

func (c *Compiled) checkScheme(scheme string) error {
	p := c.policy
	switch {
	case scheme == "":
		return refuse("the URL has no scheme")
	case len(p.AllowedSchemes) > 0 && !containsFold(p.AllowedSchemes, scheme):
		return refuse("scheme %q is not allowed", scheme)
	case len(p.AllowedSchemes) == 0 && containsFold(p.DisallowedSchemes, scheme):
		return refuse("scheme %q is disallowed", scheme)
	}
	return nil
}

// checkHost checks a URL's host (Hostname: no brackets, escapes decoded)
// and returns it as the client will dial it.
func (c *Compiled) checkHost(host string) (string, error) {
	if strings.Contains(host, "%") {
		return "", refuse("host %q has an IPv6 zone", host)
	}
	if addr, err := netip.ParseAddr(host); err == nil {
		return host, c.checkLiteral(addr)
	}
	dial, name, err := canonicalHost(host)
	if err != nil {
		return "", refuse("host %q is not a valid host name: %v", host, err)
	}
	shown := strconv.Quote(host)
	if name != strings.ToLower(strings.TrimSuffix(host, ".")) {
		shown += " (" + name + ")" // say what an odd spelling stands for
	}
	if addr, err := netip.ParseAddr(name); err == nil { // "１２７.０.０.１", "127.0.0.1."
		return addr.String(), c.checkLiteral(addr) // dial the address checked, not a name
	}
	if numericHost.MatchString(name) {
		return "", refuse("host %s is a numeric or shorthand address; write the IP address in full", shown)
	}
	switch {
	case c.hasAllowList():
		if !slices.Contains(c.allowedNames, name) {
			return "", refuse("host %s is not in the allowed hosts", shown)
		}
	case slices.Contains(c.deniedNames, name):
		return "", refuse("host %s is disallowed", shown)
	}
	return dial, nil
}

// checkLiteral checks an IP address written in the URL.
func (c *Compiled) checkLiteral(addr netip.Addr) error {
	if c.hasAllowList() && !containsAddr(c.allowedNets, addr.Unmap()) {
		return refuse("address %s is not in the allowed hosts", addr)
	}
	return c.CheckAddr(addr)
}

func (c *Compiled) checkPort(port string) error {
	if port == "" {
		return nil // as Glance: only an explicit port is checked
	}
	n, err := strconv.Atoi(port)
	p := c.policy
	switch {
	case err != nil || n < 1 || n > 65535:
		return refuse("port %q is not a port", port)
	case len(p.AllowedPorts) > 0 && !slices.Contains(p.AllowedPorts, n):
		return refuse("port %d is not allowed", n)
	case len(p.AllowedPorts) == 0 && slices.Contains(p.DisallowedPorts, n):
		return refuse("port %d is disallowed", n)
	}
	return nil
}

// CheckAddr checks an IP address: a literal of the URL or, at connect
// time, the address a name resolved to. An IPv4-mapped address is its IPv4
// address; an address in a range that carries an IPv4 address is refused,
// or, for NAT64's well-known prefix, checked with the IPv4 address inside.
// An allowed-hosts IP or CIDR that covers the address as written lets it in
// whatever it is: that is the operator's explicit choice.
func (c *Compiled) CheckAddr(addr netip.Addr) error {
	addr = addr.Unmap()
	if addr.Zone() != "" {
		return refuse("address %s has an IPv6 zone", addr)
	}
	if containsAddr(c.allowedNets, addr) {
		return nil
	}
	if containsAddr(alwaysRefused, addr) {
		return refuse("address %s is %s", addr, special)
	}
	if e, v4, ok := embeddedIPv4(addr); ok {
		switch {
		case !e.checked:
			return refuse("address %s is %s, carrying %s; IPv6 addresses that carry an IPv4 address are refused, except NAT64's 64:ff9b::/96", addr, e.name, v4)
		case containsAddr(alwaysRefused, v4):
			return refuse("address %s is %s for %s, which is %s", addr, e.name, v4, special)
		case containsAddr(notGlobalV4, v4):
			return refuse("address %s is %s for %s, which is not globally reachable", addr, e.name, v4)
		case !c.hasAllowList() && containsAddr(c.deniedNets, v4):
			return refuse("address %s is %s for %s, which is disallowed", addr, e.name, v4)
		}
	}
	if !c.hasAllowList() && containsAddr(c.deniedNets, addr) {
		return refuse("address %s is disallowed", addr)
	}
	return nil
}

const special = "loopback, link-local, unspecified, multicast, reserved or a metadata service"

// hasAllowList: as in Glance, an allow list makes the deny list moot.
func (c *Compiled) hasAllowList() bool { return len(c.allowedNames)+len(c.allowedNets) > 0 }

// Dialer returns a dialer that refuses to connect to an address the policy
// refuses, whatever name led there: the check runs on the resolved address,
// just before connect, so DNS rebinding cannot slip past it.
func (c *Compiled) Dialer(timeout time.Duration) *net.Dialer {
	return &net.Dialer{
		Timeout:   timeout,
		KeepAlive: 30 * time.Second,
		Control: func(_, address string, _ syscall.RawConn) error {
			ap, err := netip.ParseAddrPort(address)
			if err != nil {
				return refuse("cannot check address %q", address)
			}
			return c.CheckAddr(ap.Addr())
		},
	}
}

// DialContext is Dialer(timeout).DialContext.
func (c *Compiled) DialContext(timeout time.Duration) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return c.Dialer(timeout).DialContext
}

func containsAddr(nets []netip.Prefix, a netip.Addr) bool {
	return slices.ContainsFunc(nets, func(p netip.Prefix) bool { return p.Contains(a) })
}

func containsFold(list []string, s string) bool {
	return slices.ContainsFunc(list, func(x string) bool { return strings.EqualFold(x, s) })
}

func refuse(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrRefused, fmt.Sprintf(format, args...))
}

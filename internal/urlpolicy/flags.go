package urlpolicy

import (
	"flag"
	"fmt"
	"strconv"
	"strings"
)

// BindFlags registers Glance's [import_filtering_opts] on fs under their
// Glance names (--allowed-hosts, ...), as comma lists that fill p. Start p
// from Default() for Glance's defaults.
func (p *Policy) BindFlags(fs *flag.FlagSet) {
	strs := func(name, help string, into *[]string) {
		fs.Func(name, help, func(v string) error { *into = splitList(v); return nil })
	}
	ints := func(name, help string, into *[]int) {
		fs.Func(name, help, func(v string) (err error) { *into, err = parsePorts(v); return err })
	}
	strs("allowed-schemes", "Glance's allowed_schemes, a comma list (default http,https).", &p.AllowedSchemes)
	strs("disallowed-schemes", "Glance's disallowed_schemes.", &p.DisallowedSchemes)
	strs("allowed-hosts", "Glance's allowed_hosts: names (compared after IDNA mapping, case and trailing dot aside), IPs or CIDRs. Loopback, link-local, reserved and metadata addresses, and IPv6 addresses that carry an IPv4 address (6to4, Teredo, NAT64 but for 64:ff9b::/96 to a public address, ...), are refused unless an IP or CIDR here names them.", &p.AllowedHosts)
	strs("disallowed-hosts", "Glance's disallowed_hosts: names, IPs or CIDRs.", &p.DisallowedHosts)
	ints("allowed-ports", "Glance's allowed_ports (default 80,443); empty allows any.", &p.AllowedPorts)
	ints("disallowed-ports", "Glance's disallowed_ports.", &p.DisallowedPorts)
}

func splitList(s string) []string {
	var out []string
	for _, x := range strings.Split(s, ",") {
		if x = strings.TrimSpace(x); x != "" {
			out = append(out, x)
		}
	}
	return out
}

func parsePorts(s string) ([]int, error) {
	var out []int
	for _, x := range splitList(s) {
		n, err := strconv.Atoi(x)
		if err != nil {
			return nil, fmt.Errorf("%q is not a port", x)
		}
		out = append(out, n)
	}
	return out, nil
}

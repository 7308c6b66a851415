package urlpolicy

import (
	"errors"
	"strings"
	"testing"
)

// TestHostSpellings: a host name is compared in the form the HTTP client
// resolves, whatever its spelling in the URL or in the lists.
func TestHostSpellings(t *testing.T) {
	deny := Default()
	deny.AllowedPorts = nil
	deny.DisallowedHosts = []string{"localhost", "internal.example.com", "xn--bcher-kva.example", "a.example.com"}
	denyUnicode := Default()
	denyUnicode.DisallowedHosts = []string{"BÜCHER.example."} // a list entry is normalised too
	allow := Default()
	allow.AllowedPorts = nil
	allow.AllowedHosts = []string{"images.example.com", "bücher.example"}
	cases := []struct {
		policy Policy
		url    string
		refuse string // "" means accepted
		host   string // the host of the URL CheckURL returns, when accepted
	}{
		{deny, "http://ｌocalhost/x", `host "ｌocalhost" (localhost) is disallowed`, ""},           // fullwidth l
		{deny, "http://ＬＯＣＡＬＨＯＳＴ/x", `(localhost) is disallowed`, ""},                            // all fullwidth
		{deny, "http://LocalHost/x", `host "LocalHost" is disallowed`, ""},                       // case
		{deny, "http://localhost./x", `host "localhost." is disallowed`, ""},                     // trailing dot
		{deny, "http://localhost。/x", `(localhost) is disallowed`, ""},                           // ideographic full stop
		{deny, "http://%EF%BD%8Cocalhost/x", `(localhost) is disallowed`, ""},                    // percent-encoded fullwidth l
		{deny, "http://local%68ost/x", `is not a URL`, ""},                                       // Go refuses ASCII escapes in hosts
		{deny, "http://a\u200b.example.com/x", `(a.example.com) is disallowed`, ""},              // a zero-width space vanishes
		{deny, "http://ｉｎｔｅｒｎａｌ.example.com:8080/x", `(internal.example.com) is disallowed`, ""}, // with a port
		{deny, "http://bücher.example/x", `(xn--bcher-kva.example) is disallowed`, ""},
		{deny, "http://BÜCHER.example/x", `(xn--bcher-kva.example) is disallowed`, ""},
		{denyUnicode, "http://xn--bcher-kva.example/x", `host "xn--bcher-kva.example" is disallowed`, ""},
		{deny, "http://１２７.０.０.１/x", `address 127.0.0.1 is loopback`, ""}, // fullwidth digits make an address
		{deny, "http://１６９.２５４.１６９.２５４/x", `address 169.254.169.254 is loopback`, ""},
		{deny, "http://０x7f000001/x", `numeric or shorthand`, ""},
		{deny, "http://１２７.１/x", `numeric or shorthand`, ""},
		{deny, "http://evil..example.com/x", `not a valid host name: an empty label`, ""},
		{deny, "http://.example.com/x", `an empty label`, ""},
		{deny, "http://localhost../x", `an empty label`, ""},
		{deny, "http://a\ufffdb.example.com/x", `not a valid host name`, ""},
		{deny, "http://ex／ample.com/x", `not a valid host name`, ""}, // a fullwidth solidus maps to '/', not allowed
		// Names that must still pass, and the host they are dialled by.
		{deny, "http://images.example.com/x", "", "images.example.com"},
		{deny, "http://Images.Example.COM:8080/x", "", "images.example.com:8080"},
		{deny, "http://images.example.com./x", "", "images.example.com."}, // the dot stays: no search domains
		{deny, "http://my_host.example.com/x", "", "my_host.example.com"}, // DNS allows it; IDNA's STD3 would not
		{deny, "http://ｉｍａｇｅｓ.example.com/x", "", "images.example.com"},
		{deny, "http://bücher.example.org/x", "", "xn--bcher-kva.example.org"},
		{deny, "http://８.８.８.８/x", "", "8.8.8.8"},
		{deny, "http://8.8.8.8./x", "", "8.8.8.8"}, // an address, not a name to look up
		{allow, "https://ＩＭＡＧＥＳ.example.com:8443/x", "", "images.example.com:8443"},
		{allow, "https://bücher.example/x", "", "xn--bcher-kva.example"},
		{allow, "https://xn--bcher-kva.example/x", "", "xn--bcher-kva.example"},
		{allow, "https://images.example.com.evil.test/x", `is not in the allowed hosts`, ""},
	}
	for _, tc := range cases {
		u, err := mustCompile(t, tc.policy).CheckURL(tc.url)
		switch {
		case tc.refuse == "" && err != nil:
			t.Errorf("CheckURL(%q) = %v, want accepted", tc.url, err)
		case tc.refuse == "" && u.Host != tc.host:
			t.Errorf("CheckURL(%q) host = %q, want %q", tc.url, u.Host, tc.host)
		case tc.refuse != "" && (err == nil || !strings.Contains(err.Error(), tc.refuse)):
			t.Errorf("CheckURL(%q) = %v, want a refusal containing %q", tc.url, err, tc.refuse)
		case tc.refuse != "" && !errors.Is(err, ErrRefused):
			t.Errorf("CheckURL(%q) = %v, want it to wrap ErrRefused", tc.url, err)
		}
	}
}

func TestCompileNormalisesAndChecksNames(t *testing.T) {
	c := mustCompile(t, Policy{DisallowedHosts: []string{"ＥＶＩＬ.example.", "Bücher.example"}})
	if got, want := strings.Join(c.deniedNames, ","), "evil.example,xn--bcher-kva.example"; got != want {
		t.Errorf("denied names %q, want %q", got, want)
	}
	if c := mustCompile(t, Policy{AllowedHosts: []string{"１０.０.０.１"}}); len(c.allowedNets) != 1 || len(c.allowedNames) != 0 {
		t.Errorf("a fullwidth address in allowed hosts is names %v, nets %v; want the address 10.0.0.1", c.allowedNames, c.allowedNets)
	}
	for _, bad := range []string{"a..b", "a\ufffdb"} {
		if _, err := Compile(Policy{AllowedHosts: []string{bad}}); err == nil {
			t.Errorf("Compile accepted the host name %q", bad)
		}
	}
}

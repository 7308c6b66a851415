package urlpolicy

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"
)

func mustCompile(t *testing.T, p Policy) *Compiled {
	t.Helper()
	c, err := Compile(p)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestCheckURL(t *testing.T) {
	def := Default()
	withHosts := Default()
	withHosts.AllowedHosts = []string{"images.example.com", "10.1.0.0/16", "127.0.0.1"}
	denyHosts := Default()
	denyHosts.DisallowedHosts = []string{"evil.example.com", "192.0.2.0/24"}
	anyPort := Policy{AllowedSchemes: []string{"http", "https"}, DisallowedPorts: []int{22}}
	cases := []struct {
		policy Policy
		url    string
		refuse string // "" means accepted
	}{
		{def, "https://images.example.com/cirros.qcow2", ""},
		{def, "http://images.example.com:80/x", ""},
		{def, "HTTPS://images.example.com/x", ""},
		{def, "ftp://images.example.com/x", `scheme "ftp" is not allowed`},
		{def, "file:///etc/passwd", `scheme "file" is not allowed`},
		{def, "images.example.com/x", "the URL has no scheme"},
		{def, "http:///x", "the URL has no host"},
		{def, "http://images.example.com:8080/x", "port 8080 is not allowed"},
		{def, "http://127.0.0.1/x", "address 127.0.0.1 is loopback"},
		{def, "http://[::1]/x", "address ::1 is loopback"},
		{def, "http://[::ffff:127.0.0.1]/x", "address 127.0.0.1 is loopback"},
		{def, "http://169.254.169.254/latest/meta-data/", "address 169.254.169.254 is loopback"},
		{def, "http://[fd00:ec2::254]/", "is loopback, link-local"},
		{def, "http://0.0.0.0/x", "address 0.0.0.0 is loopback"},
		{def, "http://[fe80::1%25eth0]/x", "has an IPv6 zone"},
		{def, "http://2130706433/x", "numeric or shorthand"},
		{def, "http://0x7f000001/x", "numeric or shorthand"},
		{def, "http://0x7f.0.0.1/x", "numeric or shorthand"},
		{def, "http://127.1/x", "numeric or shorthand"},
		{def, "http://0177.0.0.1/x", "numeric or shorthand"},
		{def, "http://10.0.0.5/x", ""}, // as Glance: private ranges are the operator's to deny
		{withHosts, "https://images.example.com/x", ""},
		{withHosts, "https://IMAGES.example.com./x", ""},
		{withHosts, "https://other.example.com/x", `host "other.example.com" is not in the allowed hosts`},
		{withHosts, "https://10.1.2.3/x", ""},
		{withHosts, "https://10.2.0.1/x", "address 10.2.0.1 is not in the allowed hosts"},
		{withHosts, "http://127.0.0.1/x", ""}, // let in by IP
		{denyHosts, "https://evil.example.com/x", `host "evil.example.com" is disallowed`},
		{denyHosts, "https://192.0.2.7/x", "address 192.0.2.7 is disallowed"},
		{denyHosts, "https://good.example.com/x", ""},
		{anyPort, "http://images.example.com:8080/x", ""},
		{anyPort, "http://images.example.com:22/x", "port 22 is disallowed"},
	}
	for _, tc := range cases {
		_, err := mustCompile(t, tc.policy).CheckURL(tc.url)
		switch {
		case tc.refuse == "" && err != nil:
			t.Errorf("CheckURL(%q) = %v, want accepted", tc.url, err)
		case tc.refuse != "" && (err == nil || !strings.Contains(err.Error(), tc.refuse)):
			t.Errorf("CheckURL(%q) = %v, want a refusal containing %q", tc.url, err, tc.refuse)
		case tc.refuse != "" && !errors.Is(err, ErrRefused):
			t.Errorf("CheckURL(%q) = %v, want it to wrap ErrRefused", tc.url, err)
		}
	}
}

func TestCompileRejectsBadEntries(t *testing.T) {
	for _, p := range []Policy{
		{AllowedHosts: []string{"10.0.0.0/33"}},
		{DisallowedHosts: []string{"not a cidr/8"}},
		{AllowedPorts: []int{0}},
		{DisallowedPorts: []int{70000}},
	} {
		if _, err := Compile(p); err == nil {
			t.Errorf("Compile(%+v) accepted a bad entry", p)
		}
	}
}

// TestDialerChecksTheResolvedAddress: a name passes CheckURL, but the
// address it resolves to is checked at connect time.
func TestDialerChecksTheResolvedAddress(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(204) }))
	defer srv.Close()
	port := srv.Listener.Addr().(*net.TCPAddr).Port

	get := func(c *Compiled, host string) error {
		client := &http.Client{Transport: &http.Transport{DialContext: c.DialContext(2 * time.Second)}}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+net.JoinHostPort(host, strconv.Itoa(port))+"/", nil)
		resp, err := client.Do(req)
		if err == nil {
			resp.Body.Close()
		}
		return err
	}
	refusing := mustCompile(t, Policy{})
	if err := get(refusing, "localhost"); !errors.Is(err, ErrRefused) {
		t.Errorf("localhost (resolves to loopback) was not refused at connect time: %v", err)
	}
	allowing := mustCompile(t, Policy{AllowedHosts: []string{"127.0.0.1", "::1"}})
	if err := get(allowing, "127.0.0.1"); err != nil {
		t.Errorf("127.0.0.1, allowed by IP, was refused: %v", err)
	}
}

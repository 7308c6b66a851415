//go:build e2e

// Package gate is not an end-to-end test: hack/check-make-gates.sh runs `make test-e2e`'s
// recipe on it to show that the target's exit status is go test's, passing or failing.
package gate

import (
	"os"
	"testing"
)

func TestPasses(t *testing.T) {}

func TestFails(t *testing.T) {
	if os.Getenv("GATE_CHECK") == "" {
		t.Skip("fails on purpose, for hack/check-make-gates.sh only")
	}
	t.Fatal("this test fails on purpose: make test-e2e must exit non-zero")
}

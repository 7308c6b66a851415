package main

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"testing"
	"time"
)

// These tests show that the server closes the connection of a client that
// holds it: they pass as soon as it does, and fail only if it is still
// open after a grace period many times the timeout under test.

const (
	short = 300 * time.Millisecond
	grace = 20 * time.Second
)

// serve runs httpServer on a free loopback port with short timeouts.
func serve(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := httpServer("", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, err := io.ReadAll(r.Body); err != nil {
			http.Error(w, "slow body", http.StatusBadRequest)
			return
		}
		w.Write([]byte("ok"))
	}), timeouts{readHeader: short, read: short, write: short, idle: short})
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

// expectClosed reads what the server sends until it closes the connection.
func expectClosed(t *testing.T, conn net.Conn) {
	t.Helper()
	conn.SetReadDeadline(time.Now().Add(grace))
	_, err := io.Copy(io.Discard, conn)
	if errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("the server kept the connection open for %v", grace)
	}
}

func dial(t *testing.T, addr string) net.Conn {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

func TestASlowHeaderIsCutOff(t *testing.T) {
	conn := dial(t, serve(t))
	conn.Write([]byte("POST /v2/tasks HTTP/1.1\r\nHost: x\r\n")) // and never the end of the headers
	expectClosed(t, conn)
}

func TestASlowBodyIsCutOff(t *testing.T) {
	conn := dial(t, serve(t))
	conn.Write([]byte("POST /v2/tasks HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{\"type\":")) // and never the rest
	expectClosed(t, conn)
}

func TestAnIdleConnectionIsClosed(t *testing.T) {
	conn := dial(t, serve(t))
	conn.Write([]byte("GET /v2/tasks HTTP/1.1\r\nHost: x\r\n\r\n"))
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	if resp.Close {
		t.Fatal("the server closed the connection after one request: nothing left to test")
	}
	expectClosed(t, conn) // kept alive, then idle
}

func TestTheDefaultsBoundEveryPhase(t *testing.T) {
	srv := httpServer(":9292", http.NotFoundHandler(), defaultTimeouts)
	for name, d := range map[string]time.Duration{
		"ReadHeaderTimeout": srv.ReadHeaderTimeout, "ReadTimeout": srv.ReadTimeout,
		"WriteTimeout": srv.WriteTimeout, "IdleTimeout": srv.IdleTimeout,
	} {
		if d <= 0 || d > 5*time.Minute {
			t.Errorf("%s is %v", name, d)
		}
	}
}

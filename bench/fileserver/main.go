// Command fileserver serves a directory over HTTP on a loopback address,
// with sendfile and Range support, for the benchmarks.
package main

import (
	"flag"
	"log"
	"net"
	"net/http"
	"os"
)

func main() {
	dir := flag.String("dir", ".", "directory to serve")
	addr := flag.String("addr", "127.0.0.1:0", "loopback address to listen on")
	flag.Parse()
	l, err := net.Listen("tcp", *addr)
	if err != nil {
		log.Fatal(err)
	}
	if ip := l.Addr().(*net.TCPAddr).IP; !ip.IsLoopback() {
		log.Fatalf("refusing to serve on %s: benchmarks stay on loopback", ip)
	}
	os.Stdout.WriteString(l.Addr().String() + "\n")
	log.Fatal(http.Serve(l, http.FileServer(http.Dir(*dir))))
}

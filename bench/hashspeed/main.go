// Command hashspeed prints how fast this machine computes, on one core,
// the three digests the importer keeps of every image (md5, sha256 and
// sha512, Go's own, fed 1 MiB at a time as the importer feeds them), and
// the CPU seconds they cost for a given number of bytes: the part of an
// import's CPU that no pipeline can remove.
//
// Usage: hashspeed [-bytes N] [-mib M]
package main

import (
	"crypto/md5"
	"crypto/sha256"
	"crypto/sha512"
	"flag"
	"fmt"
	"hash"
	"time"
)

func main() {
	bytes := flag.Int64("bytes", 2<<30, "bytes the CPU seconds are given for")
	mib := flag.Int("mib", 512, "MiB hashed to measure each digest")
	flag.Parse()
	buf := make([]byte, 1<<20)
	for i := range buf {
		buf[i] = byte(i*7 + i>>9) // not zeros: the digests cost the same either way
	}
	total := 0.0
	for _, d := range []struct {
		name string
		h    hash.Hash
	}{{"md5", md5.New()}, {"sha256", sha256.New()}, {"sha512", sha512.New()}} {
		start := time.Now()
		for range *mib {
			d.h.Write(buf)
		}
		rate := float64(*mib<<20) / time.Since(start).Seconds()
		secs := float64(*bytes) / rate
		total += secs
		fmt.Printf("%s %.0f MB/s %.2f s\n", d.name, rate/1e6, secs)
	}
	fmt.Printf("all %.2f s\n", total)
}

package sandbox

import (
	"debug/elf"
	"os"
	"path/filepath"
	"runtime"
	"strings"
)

// loaderFiles are the files the dynamic loader opens to start program: its
// cache and every shared library program needs, directly
// or through another library, found in the standard directories as the
// loader finds a system program's (the launcher passes no LD_LIBRARY_PATH).
// Nothing else under /usr/lib is readable in the sandbox, so an image cannot
// name, say, a library's data file as its backing file either.
// interpreter is the loader itself, which the kernel executes.
func loaderFiles(program string) (interpreter string, files []string) {
	seen := map[string]bool{}
	add := func(path string) bool {
		if seen[path] {
			return false
		}
		seen[path] = true
		if _, err := os.Stat(path); err != nil {
			return false
		}
		files = append(files, path)
		return true
	}
	add("/etc/ld.so.cache")
	queue := []string{program}
	for len(queue) > 0 {
		f, err := elf.Open(queue[0])
		queue = queue[1:]
		if err != nil {
			continue
		}
		if interp := f.Section(".interp"); interp != nil && interpreter == "" {
			if b, err := interp.Data(); err == nil {
				interpreter = strings.TrimRight(string(b), "\x00")
				seen[interpreter] = true
			}
		}
		needed, _ := f.ImportedLibraries()
		f.Close()
		for _, lib := range needed {
			for _, dir := range libraryDirs() {
				if path := filepath.Join(dir, lib); add(path) {
					queue = append(queue, path)
					break
				}
			}
		}
	}
	return interpreter, files
}

// libraryDirs are the loader's default directories, multiarch first.
func libraryDirs() []string {
	triplet := map[string]string{"amd64": "x86_64-linux-gnu", "arm64": "aarch64-linux-gnu"}[runtime.GOARCH]
	return []string{"/lib/" + triplet, "/usr/lib/" + triplet, "/lib64", "/usr/lib64", "/lib", "/usr/lib"}
}

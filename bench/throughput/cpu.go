package main

import (
	"cmp"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
)

// clockTicks is USER_HZ, the unit of /proc's CPU times (100 on Linux).
const clockTicks = 100

// cpuUse is where this machine's CPU time went, in CPU-seconds, at one
// moment: the machine as a whole, each process alive then, and each pod's
// cgroup. The difference of two samples says what a run cost and who paid.
type cpuUse struct {
	busy  float64            // all CPUs, not idle or waiting for I/O
	procs map[int]processCPU // by pid
	pods  map[string]float64 // by pod UID, from the kubepods cgroups
}

type processCPU struct {
	name string
	cpu  float64
}

func sampleCPU() cpuUse {
	return cpuUse{busy: machineBusy(), procs: processes(), pods: podCgroups()}
}

// machineBusy is the first line of /proc/stat: user, nice, system, irq,
// softirq and steal ticks.
func machineBusy() float64 {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0
	}
	f := strings.Fields(strings.SplitN(string(b), "\n", 2)[0])
	var ticks float64
	for _, i := range []int{1, 2, 3, 6, 7, 8} {
		if i < len(f) {
			v, _ := strconv.ParseFloat(f[i], 64)
			ticks += v
		}
	}
	return ticks / clockTicks
}

// processes reads utime+stime of every process outside the pods, which
// their cgroups count (with those that exited).
func processes() map[int]processCPU {
	out := map[int]processCPU{}
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	for _, d := range dirs {
		b, err := os.ReadFile(d + "/stat")
		if err != nil {
			continue
		}
		if cg, _ := os.ReadFile(d + "/cgroup"); strings.Contains(string(cg), "/kubepods") {
			continue
		}
		s := string(b)
		open, end := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
		if open < 0 || end < open {
			continue
		}
		f := strings.Fields(s[end+1:]) // f[0] is field 3, the state
		if len(f) < 13 {
			continue
		}
		utime, _ := strconv.ParseFloat(f[11], 64)
		stime, _ := strconv.ParseFloat(f[12], 64)
		pid, _ := strconv.Atoi(filepath.Base(d))
		out[pid] = processCPU{name: s[open+1 : end], cpu: (utime + stime) / clockTicks}
	}
	return out
}

// podCgroups reads cpuacct.usage of every pod cgroup the kubelet made
// (cgroupfs driver, cgroup v1 or v2).
func podCgroups() map[string]float64 {
	out := map[string]float64{}
	for _, pattern := range []string{
		"/sys/fs/cgroup/cpuacct/kubepods/pod*/cpuacct.usage",
		"/sys/fs/cgroup/cpuacct/kubepods/*/pod*/cpuacct.usage",
	} {
		files, _ := filepath.Glob(pattern)
		for _, f := range files {
			b, err := os.ReadFile(f)
			if err != nil {
				continue
			}
			ns, _ := strconv.ParseFloat(strings.TrimSpace(string(b)), 64)
			out[strings.TrimPrefix(filepath.Base(filepath.Dir(f)), "pod")] = ns / 1e9
		}
	}
	return out
}

// cpuReport prints what a run of tasks cost, per task and per component,
// and returns the components' CPU-seconds.
// podGroup names the group of a pod UID ("" for a pod unknown to it);
// processes whose pid belongs to a pod are already counted there.
func cpuReport(label string, before, after cpuUse, wall float64, tasks int, podGroup func(uid string) string) map[string]float64 {
	busy := after.busy - before.busy
	fmt.Printf("\nCPU during the %s run: %.1f CPU-s of %.1f available (%d cores x %.1f s), %.2f CPU-s per task\n",
		label, busy, wall*float64(cores()), cores(), wall, busy/float64(tasks))
	groups := map[string]float64{}
	for uid, cpu := range after.pods {
		d := cpu - before.pods[uid]
		if d <= 0 {
			continue
		}
		groups["pod: "+cmp.Or(podGroup(uid), "other pods")] += d
	}
	for pid, p := range after.procs {
		d := p.cpu - before.procs[pid].cpu
		if b, ok := before.procs[pid]; ok && b.name != p.name {
			d = p.cpu // the pid was reused
		}
		if d > 0 {
			groups[p.name] += d
		}
	}
	rest := busy - sumValues(groups)
	groups["exited host processes (runc, shims, CNI, mounts) and the kernel"] = max(rest, 0)
	type row struct {
		name string
		cpu  float64
	}
	var rows []row
	for n, c := range groups {
		rows = append(rows, row{n, c})
	}
	slices.SortFunc(rows, func(a, b row) int { return cmp.Compare(b.cpu, a.cpu) })
	for _, r := range rows {
		if r.cpu < 0.01*busy {
			continue
		}
		fmt.Printf("  %-66s %7.1f CPU-s  %5.1f%%  %.3f per task\n", r.name, r.cpu, 100*r.cpu/busy, r.cpu/float64(tasks))
	}
	return groups
}

// scaling models the shim's run on more nodes from where its CPU went: the
// control plane's share stays on its machine, the nodes' share (kubelet,
// containerd, runc, CNI, the importers) spreads over N nodes. With this
// machine's cores for the control plane and for each node, the run can end
// no sooner than the busier side allows. The model's one-node figure, with
// both sides sharing one machine, is checked against the measured wall.
func scaling(groups map[string]float64, tasks int, wall, glance float64) {
	var plane, node float64
	for name, cpu := range groups {
		switch {
		case name == "throughput" || name == "go":
			// the benchmark's own client
		case controlPlane(name):
			plane += cpu
		default:
			node += cpu
		}
	}
	n, c := float64(tasks), float64(cores())
	fmt.Printf("\nscaling model: per task %.3f CPU-s on the control plane (API server, etcd, controllers, operator, shim) and %.3f on the node (kubelet, containerd, runc, CNI, importer pods, kernel)\n",
		plane/n, node/n)
	fmt.Printf("  1 node sharing this machine with the control plane: >= %.1f s (measured %.1f s)\n", (plane+node)/c, wall)
	for nodes := 1; nodes <= 4; nodes++ {
		fmt.Printf("  control plane on its own %d cores, %d node(s) of %d cores: >= %.1f s (Glance measured %.1f s)\n",
			cores(), nodes, cores(), max(plane/c, node/(c*float64(nodes))), glance)
	}
}

func controlPlane(name string) bool {
	for _, p := range []string{"kube-apiserver", "etcd", "kube-controller", "kube-scheduler", "pod: image-import-system/"} {
		if strings.HasPrefix(name, p) {
			return true
		}
	}
	return false
}

func sumValues(m map[string]float64) float64 {
	s := 0.0
	for _, v := range m {
		s += v
	}
	return s
}

func cores() int { return runtime.NumCPU() }

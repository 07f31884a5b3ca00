package main

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// clockTicks is USER_HZ, 100 on every Linux platform Go supports.
const clockTicks = 100

// ProcStat is a snapshot of a process from /proc.
type ProcStat struct {
	CPUSeconds float64 // user + system
	HWMKiB     int64   // peak resident set (VmHWM)
}

// pidList is the -pid flag: one or more comma-separated process IDs.
type pidList []int

func (l *pidList) String() string {
	parts := make([]string, len(*l))
	for i, p := range *l {
		parts[i] = strconv.Itoa(p)
	}
	return strings.Join(parts, ",")
}

func (l *pidList) Set(v string) error {
	*l = nil
	for _, f := range strings.Split(v, ",") {
		p, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || p <= 0 {
			return fmt.Errorf("bad process ID %q", f)
		}
		*l = append(*l, p)
	}
	return nil
}

// ReadProcs sums the snapshots of several processes: CPU seconds and peak
// resident sets (each process's own peak; together an upper bound of the
// peak of the whole).
func ReadProcs(pids []int) (ProcStat, error) {
	var sum ProcStat
	for _, pid := range pids {
		s, err := ReadProc(pid)
		if err != nil {
			return sum, err
		}
		sum.CPUSeconds += s.CPUSeconds
		sum.HWMKiB += s.HWMKiB
	}
	return sum, nil
}

// ReadProc reads /proc/PID/stat and /proc/PID/status.
func ReadProc(pid int) (ProcStat, error) {
	var s ProcStat
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return s, err
	}
	// The command name (field 2) may hold spaces; fields restart after ')'.
	i := strings.LastIndexByte(string(data), ')')
	if i < 0 {
		return s, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	f := strings.Fields(string(data[i+1:]))
	if len(f) < 13 {
		return s, fmt.Errorf("/proc/%d/stat: too few fields", pid)
	}
	utime, _ := strconv.ParseFloat(f[11], 64) // field 14
	stime, _ := strconv.ParseFloat(f[12], 64) // field 15
	s.CPUSeconds = (utime + stime) / clockTicks
	st, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return s, err
	}
	defer st.Close()
	sc := bufio.NewScanner(st)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			s.HWMKiB, _ = strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		}
	}
	return s, sc.Err()
}

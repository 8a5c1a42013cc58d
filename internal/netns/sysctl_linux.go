package netns

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// SetSysctl writes a per-namespace sysctl ("net.ipv4.ip_forward", or
// "net/ipv6/conf/eth0.100/accept_dad" when a part contains dots) inside the
// namespace. Only keys under net. are accepted: other sysctls are global and
// must not be changed by a namespace-bound component.
func (n *NetNS) SetSysctl(key, value string) error {
	p, err := sysctlPath(key)
	if err != nil {
		return err
	}
	return n.Do(func() error {
		cur, err := os.ReadFile(p)
		if err == nil && strings.TrimSpace(string(cur)) == value {
			return nil
		}
		if err := os.WriteFile(p, []byte(value), 0o644); err != nil {
			return fmt.Errorf("set sysctl %s=%s: %w", key, value, err)
		}
		return nil
	})
}

// Sysctl reads a per-namespace sysctl inside the namespace.
func (n *NetNS) Sysctl(key string) (string, error) {
	p, err := sysctlPath(key)
	if err != nil {
		return "", err
	}
	var v string
	err = n.Do(func() error {
		b, err := os.ReadFile(p)
		if err != nil {
			return fmt.Errorf("read sysctl %s: %w", key, err)
		}
		v = strings.TrimSpace(string(b))
		return nil
	})
	return v, err
}

// sysctlPath maps "net.ipv4.ip_forward" or, for keys with interface names
// that contain dots, "net/ipv6/conf/eth0.100/accept_dad" to its /proc path.
func sysctlPath(key string) (string, error) {
	p := key
	if !strings.Contains(key, "/") {
		p = strings.ReplaceAll(key, ".", "/")
	}
	if !strings.HasPrefix(p, "net/") || strings.Contains(p, "..") || strings.Contains(p, "//") || strings.ContainsRune(p, 0) {
		return "", fmt.Errorf("sysctl %q: only per-namespace net.* keys are allowed", key)
	}
	return filepath.Join("/proc/sys", p), nil
}

package netns

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// SetSysctl writes a per-namespace sysctl ("net.ipv4.ip_forward") inside the
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

func sysctlPath(key string) (string, error) {
	if !strings.HasPrefix(key, "net.") || strings.Contains(key, "..") || strings.ContainsAny(key, "/\x00") {
		return "", fmt.Errorf("sysctl %q: only per-namespace net.* keys are allowed", key)
	}
	return filepath.Join("/proc/sys", strings.ReplaceAll(key, ".", "/")), nil
}

package fake_test

import (
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/kubewire/kubewire/driver/drivertest"
	"github.com/kubewire/kubewire/driver/fake"
)

func TestLinksConformance(t *testing.T) {
	var seq atomic.Int32
	drivertest.TestLinkDriver(t, func(t *testing.T) drivertest.LinkEnv {
		f := fake.NewLinks()
		f.StrictNetNS()
		return drivertest.LinkEnv{
			Driver: f,
			NewNetNS: func(t *testing.T) string {
				p := fmt.Sprintf("/run/netns/fake-%d", seq.Add(1))
				f.AddNetNS(p)
				return p
			},
			RemoveNetNS: func(t *testing.T, path string) { f.RemoveNetNS(path) },
		}
	})
}

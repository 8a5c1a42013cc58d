package netlink_test

import (
	"testing"

	"github.com/kubewire/kubewire/internal/testmain"
)

func TestMain(m *testing.M) { testmain.Run(m) }

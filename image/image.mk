# mxknock appliance image: `make image`, `make vm`, `make image-test` (root; see image/README.md).
# Included from the top Makefile. Outputs: mkosi.output/ (images), mkosi.cache/ (packages),
# build/image/ (wheelhouse, kernel, ESP, logs).
IMAGE_OUT     := mkosi.output
IMAGE_WORK    := build/image
IMAGE_DISK    := $(IMAGE_OUT)/mxknock.img
VM_PREFIX     ?= mxkvm
VM_MEM        ?= 1024
# A YAML config handed to `make vm`'s guest as a credential; empty: first-boot setup on the console.
VM_CONFIG     ?=
# tcg (no KVM here); kvm where /dev/kvm works.
ACCEL         ?= tcg
IMAGE_TEST_ARGS ?=
# Debian's python3, not whatever python3 comes first on PATH: the lab scripts use Debian
# packages of image/REQUIREMENTS.txt (python3-pyte).
HOST_PYTHON   ?= /usr/bin/python3

.PHONY: image image-host-deps image-clean vm image-test image-help

image-help:
	@echo "make image       build the appliance image: mkosi.output/mxknock.img (+ .zst, .sha256) (root)"
	@echo "make vm          boot it in qemu with a namespace lab; serial console here (VM_CONFIG=file.yaml)"
	@echo "make image-test  build, boot under qemu + OVMF, push traffic through it (root; CI)"
	@echo "make image-clean remove mkosi.output/ and build/image/"

image-host-deps:
	@bash image/host-deps.sh

image: image-host-deps
	@bash image/build.sh

image-clean:
	rm -rf $(IMAGE_OUT) $(IMAGE_WORK)

# Boot the image with two NICs wired into a namespace lab; the serial console is this terminal.
vm:
	@test -f $(IMAGE_DISK) || $(MAKE) --no-print-directory image
	@$(HOST_PYTHON) image/test/vmlab.py vm --prefix $(VM_PREFIX) --disk $(IMAGE_DISK) --mem $(VM_MEM) --accel $(ACCEL) \
	  $(if $(VM_CONFIG),--config $(VM_CONFIG))

# Build (incremental), boot under qemu+OVMF, push real traffic through the guest's bridge.
image-test: image
	@$(HOST_PYTHON) image/test/image_test.py --disk $(IMAGE_DISK) --mem $(VM_MEM) --accel $(ACCEL) $(IMAGE_TEST_ARGS)

#!/bin/sh
# Builds the VM that tests/nftables_flowtable.rs boots: Debian's own kernel
# package (its config has CONFIG_NF_FLOW_TABLE=m, which a machine's running
# kernel may lack) unpacked into DIR/kernel with its module index, and an
# initramfs of busybox, the virtio 9p modules and tests/vm/init, which
# mounts the host's root read-only as the guest's. Nothing is installed on
# the host but the tools: the kernel runs only inside qemu.
#
# Usage: tests/vm/prepare.sh [DIR]   (default target/vm; x86_64 hosts)
set -eu
here=$(cd "$(dirname "$0")" && pwd)
dir=${1:-target/vm}
[ "$(uname -m)" = x86_64 ] || { echo "vm: qemu's x86_64 guest only on x86_64 hosts, not built"; exit 0; }
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)

package=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-[0-9]/ { print $2; exit }')
release=${package#linux-image-}
if [ ! -e "$dir/kernel/$package" ]; then
	download=$(mktemp -d)
	chown _apt "$download" 2>/dev/null || true # apt downloads as its _apt user
	(cd "$download" && apt-get download -q "$package" >/dev/null)
	rm -rf "$dir/kernel"
	dpkg-deb -x "$download"/"$package"_*.deb "$dir/kernel"
	rm -rf "$download"
	depmod -b "$dir/kernel" "$release"
	touch "$dir/kernel/$package"
fi
ln -sf "kernel/boot/vmlinuz-$release" "$dir/vmlinuz"

# The initramfs has no libc: busybox must be the static one.
if ldd /bin/busybox >/dev/null 2>&1; then
	echo "vm: /bin/busybox is linked dynamically; install busybox-static" >&2
	exit 1
fi
initramfs=$(mktemp -d)
mkdir -p "$initramfs/bin" "$initramfs/modules" "$initramfs/proc" "$initramfs/sys" "$initramfs/dev"
cp /bin/busybox "$initramfs/bin/busybox"
cp "$here/init" "$initramfs/init"
chmod 755 "$initramfs/init"
# 9p over virtio-pci and overlayfs, and what they need, in dependency order.
n=10
for module in 9p 9pnet_virtio virtio_pci overlay; do
	modprobe -d "$dir/kernel" -S "$release" --show-depends "$module"
done | awk '$1 == "insmod" && !seen[$2]++ { print $2 }' | while read -r path; do
	cp "$path" "$initramfs/modules/$n-$(basename "$path")"
	n=$((n + 1))
done
(cd "$initramfs" && find . | cpio -o -H newc --quiet) | gzip -1 > "$dir/initrd.gz"
rm -rf "$initramfs"
echo "vm: $dir/vmlinuz ($release) and $dir/initrd.gz"

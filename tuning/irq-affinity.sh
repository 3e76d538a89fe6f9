#!/usr/bin/env bash
# Show where a NIC's interrupts run, or move them to one CPU that runs no executor.
#   tuning/irq-affinity.sh show [IFACE]      list IRQs (of IFACE, or all) and their CPU lists
#   tuning/irq-affinity.sh CPU IFACE         pin every IRQ of IFACE to CPU (needs root;
#                                            stop irqbalance first, or it moves them back)
set -euo pipefail
irqs() { grep -E "${1:-.}" /proc/interrupts | awk -F: '/^ *[0-9]+:/{gsub(/ /,"",$1); print $1}'; }
if [ "${1:-show}" = show ]; then
  for i in $(irqs "${2:-}"); do
    printf "irq %-5s cpus %-10s %s\n" "$i" "$(cat /proc/irq/$i/smp_affinity_list)" \
      "$(grep -E "^ *$i:" /proc/interrupts | awk '{print $NF}')"
  done
  exit 0
fi
cpu=$1; iface=${2:?name the interface, e.g. eth0}
n=0
for i in $(irqs "$iface"); do
  echo "$cpu" > "/proc/irq/$i/smp_affinity_list" && n=$((n + 1))
done
echo "pinned $n interrupts of $iface to CPU $cpu"

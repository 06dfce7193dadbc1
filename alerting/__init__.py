"""Alerting service: defective frames in, defect events with regions and heatmap crops out."""

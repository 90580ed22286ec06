"""ims-migrate: bulk cross-region copies of Huawei Cloud IMS private images."""

__version__ = "0.1.0"

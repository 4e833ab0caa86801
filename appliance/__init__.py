"""mxknock: Unlisting and Nolisting for SMTP on a transparent bridge."""

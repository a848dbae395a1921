"""msconvert.emulator"""

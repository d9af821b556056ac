"""Simulation stand-in for the arm: one interface, MuJoCo and PyBullet backends."""

package com.example.greeting;

/** The SNAPSHOT sibling module the application depends on. */
public final class Greeter {
    private Greeter() {}

    public static String greet(String name) {
        return "Hello, " + name + "!";
    }
}
